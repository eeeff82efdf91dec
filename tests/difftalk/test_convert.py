"""DiffTalk converter: official Lightning layout (EMA, prefixes, schedule), vq-f4 alone, strictness."""

from __future__ import annotations

import re
import sys
import types
from pathlib import Path

import pytest
import torch
from conftest import load_golden
from torch import Tensor

from talkinghead import checkpoints
from talkinghead.dawn.convert import apply_renames
from talkinghead.difftalk.configs import PRESETS
from talkinghead.difftalk.convert import (
    convert,
    convert_first_stage,
    convert_vq_state_dict,
    unet_keys_rename,
)
from talkinghead.difftalk.model_dir import FAMILY, load_model_dir
from talkinghead.difftalk.networks import build_denoiser, build_first_stage
from talkinghead.model_index import read_model_index
from talkinghead.torch_archive import read_checkpoint

GOLDEN = PRESETS["golden-reduced"]


@pytest.fixture(scope="module")
def golden_state() -> dict[str, Tensor]:
    return load_golden("difftalk/difftalk_reduced")


def _fake_lightning_module() -> type:
    """A class pickled by reference as Lightning's ModelCheckpoint (Lightning is not installed)."""
    name = "pytorch_lightning.callbacks.model_checkpoint"
    module = types.ModuleType(name)
    cls = type("ModelCheckpoint", (), {"__module__": name})
    module.ModelCheckpoint = cls
    for parent in ("pytorch_lightning", "pytorch_lightning.callbacks"):
        sys.modules.setdefault(parent, types.ModuleType(parent))
    sys.modules[name] = module
    return cls


def _official_ckpt(state: dict[str, Tensor], path: Path) -> dict[str, Tensor]:
    """A Lightning .ckpt as DiffTalk saves it: raw UNet perturbed, EMA (dot-less names) = golden."""
    full = dict(state)
    for key, value in state.items():
        if key.startswith("model.diffusion_model."):
            full[key] = value + 1.0  # the raw weights must NOT be the ones used
            full["model_ema." + key.removeprefix("model.").replace(".", "")] = value
    full["model_ema.decay"] = torch.tensor(0.9999)
    full["model_ema.num_updates"] = torch.tensor(1234, dtype=torch.int32)
    callback = _fake_lightning_module()
    ckpt = {
        "epoch": 3,
        "global_step": 1234,
        "pytorch-lightning_version": "1.2.5",
        "callbacks": {callback: {"best_model_score": torch.tensor(0.1)}},
        "optimizer_states": [{"state": {}}],
        "state_dict": full,
    }
    torch.save(ckpt, path)
    return full


def test_lightning_checkpoint_uses_the_ema_weights(
    golden_state: dict[str, Tensor], tmp_path: Path
) -> None:
    src = tmp_path / "last.ckpt"
    _official_ckpt(golden_state, src)
    out = convert(src, tmp_path / "model", config=GOLDEN)
    index = read_model_index(out, FAMILY)
    assert index.family == "difftalk"
    assert set(index.components) == {"first_stage", "unet", "condition"}
    meta = checkpoints.read_metadata(out / "unet")
    assert meta["source_sha256"] == checkpoints.sha256_file(src) and meta["source_file"] == "last.ckpt"
    modules = load_model_dir(out)
    expected = apply_renames(
        {
            k.removeprefix("model.diffusion_model."): v
            for k, v in golden_state.items()
            if k.startswith("model.diffusion_model.")
        },
        unet_keys_rename(GOLDEN.denoiser),
    )
    loaded = modules.unet.state_dict()
    assert set(loaded) == set(expected)
    assert all(torch.equal(loaded[k], v.float()) for k, v in expected.items())


def test_raw_weights_without_ema(golden_state: dict[str, Tensor], tmp_path: Path) -> None:
    src = tmp_path / "last.ckpt"
    _official_ckpt(golden_state, src)
    modules = load_model_dir(convert(src, tmp_path / "raw", config=GOLDEN, use_ema=False))
    weight = modules.unet.state_dict()["conv_in.weight"]
    assert torch.equal(
        weight, (golden_state["model.diffusion_model.input_blocks.0.0.weight"] + 1.0).float()
    )


def test_widths_are_inferred(golden_state: dict[str, Tensor], tmp_path: Path) -> None:
    src = tmp_path / "golden.safetensors"
    from safetensors.torch import save_file

    save_file(golden_state, str(src))
    modules = load_model_dir(convert(src, tmp_path / "inferred", image_size=64))
    assert modules.config == GOLDEN


def test_strictness(golden_state: dict[str, Tensor], tmp_path: Path) -> None:
    from safetensors.torch import save_file

    extra = {**golden_state, "model.logvar": torch.zeros(1000)}
    save_file(extra, str(tmp_path / "extra.safetensors"))
    with pytest.raises(ValueError, match="unexpected keys.*model.logvar"):
        convert(tmp_path / "extra.safetensors", tmp_path / "x", config=GOLDEN)
    missing = {k: v for k, v in golden_state.items() if "input_blocks.4.1.proj_in" not in k}
    save_file(missing, str(tmp_path / "missing.safetensors"))
    with pytest.raises(ValueError, match="missing keys.*down_blocks.1.attentions.0.proj_in"):
        convert(tmp_path / "missing.safetensors", tmp_path / "y", config=GOLDEN)
    bad = {**golden_state, "betas": golden_state["betas"] * 2}
    save_file(bad, str(tmp_path / "bad.safetensors"))
    with pytest.raises(ValueError, match="schedule buffer 'betas'"):
        convert(tmp_path / "bad.safetensors", tmp_path / "z", config=GOLDEN)
    assert not (tmp_path / "x").exists() and not (tmp_path / "y").exists()


def test_vq_f4_checkpoint_alone(golden_state: dict[str, Tensor], tmp_path: Path) -> None:
    vq = {
        k.removeprefix("first_stage_model."): v
        for k, v in golden_state.items()
        if k.startswith("first_stage_model.")
    }
    state = {**vq, "loss.discriminator.main.0.weight": torch.zeros(64, 3, 4, 4)}
    torch.save({"state_dict": state, "epoch": 1}, tmp_path / "model.ckpt")
    out = convert_first_stage(tmp_path / "model.ckpt", tmp_path / "first_stage")
    model = checkpoints.load_component(out)
    assert checkpoints.read_config(out) == GOLDEN.first_stage
    assert torch.equal(
        model.state_dict()["quantize.embedding.weight"], vq["quantize.embedding.weight"].float()
    )


def test_code_in_a_checkpoint_is_refused(tmp_path: Path) -> None:
    import os

    torch.save({"state_dict": {}, "hook": os.system}, tmp_path / "evil.ckpt")
    with pytest.raises(ValueError, match=r"refers to (posix|nt)\.system.*refusing"):
        read_checkpoint(tmp_path / "evil.ckpt")
    (tmp_path / "legacy.ckpt").write_bytes(b"\x80\x02not a zip")
    with pytest.raises(ValueError, match="not a PyTorch zip archive"):
        convert(tmp_path / "legacy.ckpt", tmp_path / "out")


def _inventory(reference_dir: Path) -> dict[str, tuple[int, ...]]:
    shapes = {}
    for line in (reference_dir / "difftalk_state_dict_keys.txt").read_text().splitlines()[1:]:
        name, shape = line.split(" ", 1)
        shapes[name] = tuple(int(d) for d in re.findall(r"\d+", shape))
    return shapes


def test_rename_tables_cover_the_official_inventory(reference_dir: Path) -> None:
    """Official full-width key list -> our keys: one-to-one, and exactly the diffusers modules' keys."""
    official = _inventory(reference_dir)
    cfg = PRESETS["difftalk"]
    unet_keys = {
        k.removeprefix("model.diffusion_model."): s
        for k, s in official.items()
        if k.startswith("model.diffusion_model.")
    }
    ema = [k for k in official if k.startswith("model_ema.")]
    assert len(ema) == len(unet_keys) + 2  # + decay, num_updates
    renamed = apply_renames(unet_keys, unet_keys_rename(cfg.denoiser))
    with torch.device("meta"):
        unet = build_denoiser(cfg.denoiser)
        vq = build_first_stage(cfg.first_stage)
    ours = {k: tuple(v.shape) for k, v in unet.state_dict().items()}
    assert renamed == ours
    vq_keys = {
        k.removeprefix("first_stage_model."): torch.empty(s, device="meta")
        for k, s in official.items()
        if k.startswith("first_stage_model.")
    }
    converted = {
        k: tuple(v.shape) for k, v in convert_vq_state_dict(vq_keys, cfg.first_stage).items()
    }
    assert converted == {k: tuple(v.shape) for k, v in vq.state_dict().items()}
