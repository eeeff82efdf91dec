"""Official checkpoint conversion (dawn_spec §3): rename tables against the committed key inventories,
an end-to-end ``talkinghead convert official`` on a folder laid out like the HF repository (built from the
golden state dicts), refusal of pickled objects, folder-name variants and opt.yaml parsing."""

from __future__ import annotations

import hashlib
import json
import math
import os
import pickle
from pathlib import Path

import pytest
import torch
import yaml
from conftest import load_golden, max_rel_error
from safetensors.torch import load_file

from talkinghead import checkpoints, cli
from talkinghead.dawn import convert as conv
from talkinghead.dawn.configs import PRESETS
from talkinghead.dawn.models import flow_autoencoder, pose_blink_cvae, unet3d
from talkinghead.dawn.models.rotary import rotary_frequencies
from talkinghead.dawn.modules import COMPONENTS, dawn_index, load_dawn_modules
from talkinghead.diffusion.schedules import diffusion_buffers
from talkinghead.model_index import INDEX_FILE, read_model_index

INVENTORIES = Path(__file__).resolve().parents[1] / "fixtures" / "official_keys"
DTYPES = {"float32": torch.float32, "int64": torch.int64}


def fake_official(name: str) -> dict[str, dict[str, torch.Tensor]]:
    """An official checkpoint's state dicts with the inventory's keys and shapes.

    Weights live on the meta device (no memory); the entries the converter checks by value (rotary ``freqs``,
    schedule buffers) get their true deterministic values.
    """
    inventory = json.loads((INVENTORIES / f"{name}.json").read_text())
    schedule = diffusion_buffers(1000)
    out: dict[str, dict[str, torch.Tensor]] = {}
    for top, entries in inventory["state_dicts"].items():
        sd = {}
        for key, (shape, dtype) in entries.items():
            if key.endswith("rotary_emb.freqs"):
                sd[key] = rotary_frequencies(2 * shape[0])
            elif key in schedule:
                sd[key] = schedule[key]
            else:
                sd[key] = torch.empty(shape, dtype=DTYPES[dtype], device="meta")
        out[top] = sd
    return out


def assert_fits(
    model: torch.nn.Module, converted: dict[str, torch.Tensor], n_official: int, n_dropped: int
):
    """The converted keys are exactly the module's keys (total + one-to-one), with equal shapes."""
    ours = model.state_dict()
    assert sorted(converted) == sorted(ours)
    assert len(converted) == n_official - n_dropped  # nothing merged, nothing invented
    bad = [k for k in ours if tuple(ours[k].shape) != tuple(converted[k].shape)]
    assert not bad, bad
    checkpoints.load_state_dict_strict(model, converted, assign=True)


# ----------------------------------------------------------------------------- (a) key inventories


@pytest.mark.parametrize("name", ["LFG_128_1000ep", "LFG_256_400ep"])
def test_lfg_rename_table_is_total_and_one_to_one(name):
    official = fake_official(name)
    sd = conv.lfg_state_dict({**official, "optimizer": {}, "epoch": 1000})
    cfg = flow_autoencoder.config_from_state_dict(sd)
    assert cfg == PRESETS["dawn-128"].flow_ae
    assert_fits(checkpoints.build_empty(cfg), sd, sum(len(v) for v in official.values()), 0)


@pytest.mark.parametrize("name", ["DAWN_128", "DAWN_256"])
def test_unet_rename_table_is_total_and_one_to_one(name):
    diffusion = fake_official(name)["diffusion"]
    assert len(diffusion) == 912
    sd = conv.unet_state_dict(diffusion)
    cfg = unet3d.config_from_state_dict(sd)
    assert cfg == PRESETS["dawn-128"].unet
    # dropped: 12 schedule buffers + 10 copies of the rotary freqs
    assert_fits(checkpoints.build_empty(cfg), sd, 912, 22)


@pytest.mark.parametrize("name, motion_dim", [("pbnet_pose", 6), ("pbnet_blink", 2)])
def test_pbnet_rename_table_is_total_and_one_to_one(name, motion_dim):
    official = fake_official(name)[""]
    sd = conv.pbnet_state_dict(official)
    cfg = pose_blink_cvae.config_from_state_dict(official)
    assert cfg.motion_dim == motion_dim
    # dropped: 2 position tables + 5 copies of the rotary freqs
    assert_fits(checkpoints.build_empty(cfg), sd, 88, 7)


def test_wrapper_prefixes_are_stripped():
    sd = {"module.a": 1, "_orig_mod.module.b": 2, "c": 3}
    assert conv.strip_wrappers(sd) == {"a": 1, "b": 2, "c": 3}
    with pytest.raises(ValueError, match="both become 'a'"):
        conv.strip_wrappers({"module.a": 1, "a": 2})


def test_rename_collisions_raise():
    with pytest.raises(ValueError, match="two official keys onto 'x.w'"):
        conv.apply_renames({"a.w": 1, "b.w": 2}, [(r"^(a|b)\.", "x.")])


def test_wrong_rotary_freqs_and_schedule_are_refused():
    diffusion = fake_official("DAWN_128")["diffusion"]
    bad = dict(diffusion)
    bad["denoise_fn.ups.0.3.fn.fn.fn.rotary_emb.freqs"] = torch.ones(16)
    with pytest.raises(
        ValueError, match="ups.0.3.fn.fn.fn.rotary_emb.freqs .* not the deterministic"
    ):
        conv.unet_state_dict(bad)
    bad = dict(diffusion)
    bad["betas"] = diffusion["betas"] * 1.01
    with pytest.raises(ValueError, match="schedule buffer 'betas' differs"):
        conv.unet_state_dict(bad)


# ------------------------------------------------------------------- golden folder in the HF layout


def position_table(length: int, dim: int) -> torch.Tensor:
    """The official PositionalEncoding ``pe`` buffer (MANIFEST §2): (length, 1, dim) float32."""
    position = torch.arange(length, dtype=torch.float32)[:, None]
    div = torch.exp(torch.arange(0, dim, 2).float() * (-math.log(10000.0) / dim))
    pe = torch.zeros(length, dim)
    pe[:, 0::2] = torch.sin(position * div)
    pe[:, 1::2] = torch.cos(position * div)
    return pe[:, None]


PE_SHA256 = {  # MANIFEST §2: sha256 of the float32 bytes of the real buffers
    384: "687749e388173afdf494160ea8474cb05b1064d0035f116d40da54708815c7c5",
    64: "505763c927a880c78a22fac2f88e81bc36034f05427dd5c99dd41b9053e16c34",
}
OPT_PARAMS = {  # MANIFEST §2 params, before the loader's device / audio_dim / pos_dim / eye_dim overrides
    "expname": "exps",
    "folder": "exps_delta_pose_rope_eye/HDTF_b40_200_eye_kl4e3_lr4e-4_reg5e-4_rope16_3",
    "cuda": True,
    "gpu": "0",
    "ckpt": "",
    "batch_size": 40,
    "num_epochs": 100000,
    "lr": 0.0004,
    "snapshot": 10000,
    "dataset": "hdtf",
    "num_frames": 200,
    "max_len": -1,
    "min_len": -1,
    "num_seq_max": -1,
    "modelname": "cvae_transformerreemb5_rc_kl_reg",
    "latent_dim": 256,
    "lambda_kl": 0.004,
    "lambda_rcw": 1.0,
    "lambda_rc": 1.0,
    "lambda_ssim": 1.0,
    "lambda_reg": 0.0005,
    "num_layers": 2,
    "ff_size": 128,
    "max_distance": 128,
    "num_buckets": 128,
    "audio_latent_dim": 256,
    "first3": False,
    "eye": "True",
    "activation": "gelu",
    "dropout": 0.1,
    "modeltype": "cvae",
    "archiname": "transformerreemb5",
    "losses": ["rc", "kl", "reg"],
    "lambdas": {"rc": 1.0, "kl": 0.004, "reg": 0.0005},
}


def _split(sd: dict[str, torch.Tensor], prefix: str) -> dict[str, torch.Tensor]:
    return {k[len(prefix) :]: v for k, v in sd.items() if k.startswith(prefix)}


def write_hf_layout(root: Path, pbnet_dirname: str = "pbnet") -> None:
    """A folder laid out like Hanbo-Cheng/DAWN, holding the golden (reduced-width) state dicts."""
    root.mkdir(parents=True, exist_ok=True)
    lfg = load_golden("lfg128_reduced")
    checkpoint = {part: _split(lfg, part + ".") for part in conv.LFG_PARTS}
    torch.save({**checkpoint, "optimizer": {}, "epoch": 1}, root / "LFG_128_1000ep.pth")
    a2v = load_golden("a2v128_reduced")
    torch.save({"diffusion": a2v, "example": 0, "optimizer_diff": {}}, root / "DAWN_128.pth")
    pe = {384: position_table(20000, 384), 64: position_table(20000, 64)}
    for net, step in (("pose", 40000), ("blink", 95000)):
        sd = dict(load_golden(f"pbnet_{net}"))
        sd["encoder.sequence_pos_encoder.pe"] = pe[384]
        sd["decoder.sequence_pos_encoder.pe"] = pe[64]
        folder = root / pbnet_dirname / net
        folder.mkdir(parents=True)
        torch.save(sd, folder / f"checkpoint_{step}.pth.tar")
        (folder / "opt.yaml").write_text(yaml.safe_dump(OPT_PARAMS))
    # the 256 files have the same architecture; the same tensors stand in for them
    for small, large in (
        ("DAWN_128.pth", "DAWN_256.pth"),
        ("LFG_128_1000ep.pth", "LFG_256_400ep.pth"),
    ):
        os.link(root / small, root / large)


@pytest.fixture(scope="module")
def converted(tmp_path_factory) -> tuple[Path, Path]:
    src = tmp_path_factory.mktemp("hf")
    write_hf_layout(src)
    out = tmp_path_factory.mktemp("out")
    assert cli.main(["convert", "official", str(src), str(out), "--no-progress"]) == 0
    return src, out


def test_position_table_matches_official_bytes():
    for dim, digest in PE_SHA256.items():
        table = position_table(20000, dim).contiguous()
        assert hashlib.sha256(table.numpy().tobytes()).hexdigest() == digest


def test_convert_writes_both_resolutions(converted):
    src, out = converted
    assert sorted(p.name for p in out.iterdir()) == ["dawn-128", "dawn-256"]  # no temp dirs left
    for res in (128, 256):
        model_dir = out / f"dawn-{res}"
        assert read_model_index(model_dir) == dawn_index(res, "hubert")
        assert sorted(p.name for p in model_dir.iterdir()) == sorted([*COMPONENTS, INDEX_FILE])
    meta = checkpoints.read_metadata(out / "dawn-256" / "unet")
    assert meta["source_file"] == "DAWN_256.pth"
    assert meta["source_sha256"] == checkpoints.sha256_file(src / "DAWN_256.pth")
    assert meta["converter_version"] == conv.CONVERTER_VERSION
    assert (
        checkpoints.read_metadata(out / "dawn-128" / "pose")["source_file"]
        == "pbnet/pose/checkpoint_40000.pth.tar"
    )
    assert (
        checkpoints.read_metadata(out / "dawn-128" / "flow_ae")["source_file"]
        == "LFG_128_1000ep.pth"
    )


def test_converted_face_loc_is_the_seed_1234_asset(converted, reference_dir):
    _, out = converted
    ours = load_file(str(out / "dawn-128" / "face_loc" / "model.safetensors"))
    reference = load_file(str(reference_dir / "face_loc_emb_seed1234.safetensors"))
    assert ours.keys() == reference.keys()
    assert all(torch.equal(ours[k], reference[k]) for k in reference)


def direct_lfg() -> torch.nn.Module:
    sd = load_golden("lfg128_reduced")
    return checkpoints.build_and_load(flow_autoencoder.config_from_state_dict(sd), sd)


def test_converted_lfg_matches_golden(converted):
    _, out = converted
    model = checkpoints.load_component(out / "dawn-128" / "flow_ae")
    direct = direct_lfg()
    io = load_golden("lfg128_reduced_io")
    with torch.no_grad():
        fea = model.compute_fea(io["input.source_image"])
        assert torch.equal(fea, direct.compute_fea(io["input.source_image"]))
        assert max_rel_error(fea, io["generator.compute_fea"]) < 1e-5
        pred = model.decode(
            io["input.source_image"], io["input.random_flow"], io["input.random_occlusion"]
        )
    assert max_rel_error(pred["prediction"], io["forward_with_flow.random.prediction"]) < 1e-4


def test_converted_unet_matches_golden(converted):
    _, out = converted
    model = checkpoints.load_component(out / "dawn-128" / "unet")
    sd = conv.unet_state_dict(load_golden("a2v128_reduced"))
    direct = checkpoints.build_and_load(unet3d.config_from_state_dict(sd), sd)
    # the official denoiser's recorded call U2 (B=2, F=16, t=[999, 37]), replayed on the converted model
    io = load_golden("a2v128_reduced_io")
    source = torch.cat([io["U2.internal.fea"], io["U2.input.bbox_fea"]], dim=1)
    args = (io["U2.input.x"], io["U2.input.time"], io["U2.input.cond"], source)
    with torch.no_grad():
        eps = model(*args)
        # same weights, different allocations: oneDNN may pick kernels that round differently (~1e-6)
        torch.testing.assert_close(eps, direct(*args), rtol=0, atol=1e-5)
    # float32 re-implementation: the bound of tests/dawn/models/test_unet3d.py (measured <= 2e-5)
    assert max_rel_error(eps, io["U2.output"]) < 1e-4


@pytest.mark.parametrize("net", ["pose", "blink"])
def test_converted_pbnet_matches_golden(converted, net):
    _, out = converted
    model = checkpoints.load_component(out / "dawn-128" / net)
    sd = load_golden(f"pbnet_{net}")
    direct = checkpoints.build_and_load(
        pose_blink_cvae.config_from_state_dict(sd), conv.pbnet_state_dict(sd)
    )
    io = load_golden(f"pbnet_{net}_io")
    init = io["input.init_pose_normalized"] if net == "pose" else io["input.init_blink"]
    args = (init, io["F40.input.audio"], io["F40.random.z"])
    with torch.no_grad():
        deltas = model.decode(*args)
        assert torch.equal(deltas, direct.decode(*args))
    assert max_rel_error(deltas, io["F40.output.output"]) < 1e-4


def test_load_model_dir(converted):
    _, out = converted
    modules = load_dawn_modules(out / "dawn-256")
    assert modules.resolution == 256
    assert set(modules.as_dict()) == set(COMPONENTS)
    assert all(not m.training for m in modules.as_dict().values())


# ------------------------------------------------------------------------------- errors and layouts


def _touch_layout(root: Path, pbnet_dirname: str, skip: tuple[str, ...] = ()) -> None:
    names = [
        "DAWN_128.pth",
        "DAWN_256.pth",
        "LFG_128_1000ep.pth",
        "LFG_256_400ep.pth",
        f"{pbnet_dirname}/pose/checkpoint_40000.pth.tar",
        f"{pbnet_dirname}/pose/opt.yaml",
        f"{pbnet_dirname}/blink/checkpoint_95000.pth.tar",
        f"{pbnet_dirname}/blink/opt.yaml",
    ]
    for name in names:
        if name not in skip:
            (root / name).parent.mkdir(parents=True, exist_ok=True)
            (root / name).write_bytes(b"")


@pytest.mark.parametrize("dirname", ["pbnet", "pbnet_seperate"])
def test_both_pbnet_folder_names_are_found(tmp_path, dirname):
    _touch_layout(tmp_path, dirname)
    (tmp_path / dirname / "pose" / "checkpoint_10000.pth.tar").write_bytes(b"")  # older snapshot
    files = conv.find_official_files(tmp_path, (128, 256))
    assert files["pose"] == tmp_path / dirname / "pose" / "checkpoint_40000.pth.tar"
    assert files["blink_opt"] == tmp_path / dirname / "blink" / "opt.yaml"
    assert files["flow_ae_256"] == tmp_path / "LFG_256_400ep.pth"


def test_pbnet_seperate_layout_converts(converted, tmp_path):
    hf, _ = converted
    src = tmp_path / "src"
    for path in hf.rglob(
        "*"
    ):  # the same files (hard links), PBNet under the name the official code uses
        if path.is_file() and "256" not in path.name:
            rel = path.relative_to(hf).as_posix().replace("pbnet/", "pbnet_seperate/")
            (src / rel).parent.mkdir(parents=True, exist_ok=True)
            os.link(path, src / rel)
    written = conv.convert_official_dir(src, tmp_path / "out", resolutions=(128,), progress=False)
    assert written == [tmp_path / "out" / "dawn-128"]
    assert checkpoints.read_metadata(written[0] / "blink")["source_file"].startswith(
        "pbnet_seperate/blink/"
    )


def test_missing_files_are_named_in_one_sentence(tmp_path, capsys):
    _touch_layout(tmp_path, "pbnet", skip=("DAWN_256.pth", "pbnet/blink/opt.yaml"))
    code = cli.main(
        ["convert", "official", str(tmp_path), str(tmp_path / "out"), "--resolution", "all"]
    )
    assert code == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0
    assert "DAWN_256.pth" in err and "pbnet/blink/opt.yaml" in err and "talkinghead download" in err


class Payload:
    """Any picklable object that is not a tensor container."""

    def __reduce__(self):
        return (print, ("this must never run",))


@pytest.mark.filterwarnings("ignore:Detected pickle protocol")
def test_pickled_objects_are_refused(tmp_path, capsys):
    path = tmp_path / "DAWN_128.pth"
    with open(path, "wb") as f:
        pickle.dump({"diffusion": Payload()}, f)
    with pytest.raises(ValueError, match="not a plain tensor checkpoint; refusing to unpickle"):
        conv.convert_unet(path)
    torch.save({"diffusion": {"w": torch.zeros(1)}, "extra": Payload()}, path)
    with pytest.raises(ValueError, match="refusing to unpickle"):
        conv.load_official(path)
    assert "must never run" not in capsys.readouterr().out


def test_opt_yaml_with_python_tags(tmp_path):
    path = tmp_path / "opt.yaml"
    path.write_text(
        "archiname: transformerreemb5\n"
        "losses: !!python/tuple [rc, kl]\n"
        "num_layers: 2\n"
        "device: !!python/object/apply:torch.device [cuda]\n"
    )
    with pytest.raises(yaml.constructor.ConstructorError):
        yaml.safe_load(path.read_text())
    opt = conv.read_opt_yaml(path)
    assert opt == {
        "archiname": "transformerreemb5",
        "losses": ["rc", "kl"],
        "num_layers": 2,
        "device": ["cuda"],
    }
