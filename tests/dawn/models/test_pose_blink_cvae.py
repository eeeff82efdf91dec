"""PBNet (PoseBlinkCVAE): golden parity with the official decoder, config recovery, banded == full attention,
determinism, save/load, gradients, and the rotary / relative-position helpers it is built from."""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path

import pytest
import torch
from conftest import load_golden, max_rel_error
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from talkinghead.checkpoints import config_from_json, config_to_json
from talkinghead.dawn.configs import PRESETS, PoseBlinkConfig
from talkinghead.dawn.models.pose_blink_cvae import (
    PoseBlinkCVAE,
    config_from_opt_yaml,
    config_from_state_dict,
    denormalize_pose,
    normalize_pose,
    strip_official_only_keys,
)
from talkinghead.dawn.models.pose_blink_layers import sinusoidal_positions
from talkinghead.dawn.models.rotary import rotary_frequencies

# The official code runs in float32 with the same op order (scale, rotate, q.k, + bias, - rowmax, softmax);
# measured max relative error is ~4e-7, so 1e-4 leaves room for BLAS differences across machines while
# still catching any real deviation (a wrong bucket, rotary layout or missing window changes outputs by >1e-2).
REL_TOL = 1e-4
NETS = ("pose", "blink")


def _golden_model(net: str) -> PoseBlinkCVAE:
    sd = load_golden(f"pbnet_{net}")
    model = PoseBlinkCVAE(config_from_state_dict(sd)).eval()
    model.load_state_dict(strip_official_only_keys(sd), strict=True)
    return model


def _golden_init(io: dict[str, torch.Tensor], net: str) -> torch.Tensor:
    return io["input.init_pose_normalized"] if net == "pose" else io["input.init_blink"]


def _metadata(golden_dir: Path, net: str) -> dict:
    with safe_open(str(golden_dir / f"pbnet_{net}.safetensors"), "pt") as f:
        return json.loads(f.metadata()["json"])


@pytest.fixture(scope="module", params=NETS)
def golden(request: pytest.FixtureRequest) -> tuple[str, PoseBlinkCVAE, dict[str, torch.Tensor]]:
    net = request.param
    return net, _golden_model(net), load_golden(f"pbnet_{net}_io")


@pytest.mark.parametrize("frames", [40, 250])
def test_golden_decode_and_postprocess(golden, frames: int) -> None:
    net, model, io = golden
    init = _golden_init(io, net)
    with torch.no_grad():
        out = model.decode(init, io[f"F{frames}.input.audio"], io[f"F{frames}.random.z"])
    assert max_rel_error(out, io[f"F{frames}.output.output"]) <= REL_TOL
    post = denormalize_pose(out + init) if net == "pose" else out + init
    assert max_rel_error(post, io[f"F{frames}.postprocessed"]) <= REL_TOL


@pytest.mark.parametrize("frames", [40, 250])
def test_golden_eval_window_is_what_f250_exercises(golden, frames: int) -> None:
    """Without the ±200 eval mask F=250 must miss the golden output (and F=40 must not care)."""
    net, model, io = golden
    unmasked = PoseBlinkCVAE(PoseBlinkConfig(**{**model.cfg.__dict__, "eval_window": 10**6})).eval()
    unmasked.load_state_dict(model.state_dict(), strict=True)
    with torch.no_grad():
        out = unmasked.decode(
            _golden_init(io, net), io[f"F{frames}.input.audio"], io[f"F{frames}.random.z"]
        )
    err = max_rel_error(out, io[f"F{frames}.output.output"])
    assert (err > 1e-3) if frames == 250 else (err <= REL_TOL)


def test_golden_banded_attention_equals_full(golden) -> None:
    net, model, io = golden
    args = (_golden_init(io, net), io["F250.input.audio"], io["F250.random.z"])
    with torch.no_grad():
        full = model.decode(*args, attn_chunk=0)
        banded = model.decode(*args, attn_chunk=32)
    torch.testing.assert_close(banded, full, atol=2e-6, rtol=0)


def test_state_dict_matches_official_keys(golden_dir: Path) -> None:
    for net in NETS:
        official = load_golden(f"pbnet_{net}")
        freqs = {k: v for k, v in official.items() if k.endswith("rotary_emb.freqs")}
        assert len(freqs) == 5  # one per official RotaryEmbedding user; dropped by the converter
        for value in freqs.values():
            torch.testing.assert_close(value, rotary_frequencies(4), atol=0, rtol=0)
        ours = PoseBlinkCVAE(config_from_state_dict(official)).state_dict()
        expected = {k: tuple(v.shape) for k, v in official.items() if k not in freqs}
        assert {k: tuple(v.shape) for k, v in ours.items()} == expected
        with pytest.raises(RuntimeError, match="rotary_emb.freqs"):
            PoseBlinkCVAE(config_from_state_dict(official)).load_state_dict(official, strict=True)


def test_keys_match_official_checkpoint_listing(reference_dir: Path) -> None:
    """The real checkpoints (88 entries) = our state dict + 2 sinusoidal tables + 5 rotary freqs.

    The freqs are zeros here (shapes only), so they are dropped before the frequency check."""
    lines = (reference_dir / "dawn_keys_128.txt").read_text().splitlines()
    for net, dim in zip(NETS, (6, 2)):
        listed = {}
        for line in lines:
            if line.startswith(f"pbnet_{net}/"):
                key, shape = line[len(f"pbnet_{net}/") :].split(" ", 1)
                listed[key] = tuple(int(n) for n in re.findall(r"\d+", shape.rsplit(" ", 1)[0]))
        assert len(listed) == 88
        ours = PoseBlinkCVAE(PoseBlinkConfig(motion_dim=dim)).state_dict()
        shapes_only = {k: torch.zeros(s) for k, s in listed.items() if "freqs" not in k}
        kept = strip_official_only_keys(shapes_only)
        assert len(listed) - len(kept) == 7  # 5 rotary freqs + 2 sinusoidal tables
        assert {k: tuple(v.shape) for k, v in ours.items()} == {
            k: tuple(v.shape) for k, v in kept.items()
        }


def test_config_recovery_from_weights_and_opt_yaml(golden_dir: Path) -> None:
    for net, dim in zip(NETS, (6, 2)):
        cfg = config_from_state_dict(load_golden(f"pbnet_{net}"))
        assert cfg == PoseBlinkConfig(motion_dim=dim)  # the official architecture = our defaults
        params = _metadata(golden_dir, net)[
            "params"
        ]  # the official params dict (opt.yaml + overrides)
        assert config_from_opt_yaml(params, motion_dim=dim) == cfg
    with pytest.raises(ValueError, match="archiname"):
        config_from_opt_yaml({"archiname": "transformerreemb8"}, motion_dim=6)
    with pytest.raises(ValueError, match="missing"):
        config_from_state_dict({})


def test_sinusoidal_table_matches_official_pe_hash(golden_dir: Path) -> None:
    omitted = _metadata(golden_dir, "pose")["omitted_keys"]
    for key, dim in (
        ("encoder.sequence_pos_encoder.pe", 384),
        ("decoder.sequence_pos_encoder.pe", 64),
    ):
        length = omitted[key]["shape"][0]
        table = sinusoidal_positions(length, dim).contiguous()
        assert (
            hashlib.sha256(table.numpy().tobytes()).hexdigest()
            == omitted[key]["sha256_of_float32_bytes"]
        )


def test_pose_normalisation_round_trip() -> None:
    io = load_golden("pbnet_pose_io")
    raw = io["input.raw_init_pose"][None]
    assert max_rel_error(normalize_pose(raw), io["input.init_pose_normalized"]) <= 1e-6
    torch.testing.assert_close(denormalize_pose(normalize_pose(raw)), raw, atol=1e-4, rtol=1e-6)
    with pytest.raises(ValueError, match="6"):
        normalize_pose(torch.zeros(1, 2))


# ---- tiny preset -----------------------------------------------------------------------------------


def _tiny(which: str = "pose", **overrides) -> PoseBlinkCVAE:
    cfg = getattr(PRESETS["tiny"], which)
    torch.manual_seed(0)  # test-side only: a fixed random init
    return PoseBlinkCVAE(PoseBlinkConfig(**{**cfg.__dict__, **overrides}))


def _tiny_inputs(
    model: PoseBlinkCVAE, b: int = 2, t: int = 12, seed: int = 1
) -> tuple[torch.Tensor, ...]:
    g = torch.Generator().manual_seed(seed)
    cfg = model.cfg
    return torch.rand(b, t, cfg.motion_dim, generator=g), torch.randn(
        b, t, cfg.audio_dim, generator=g
    )


@pytest.mark.parametrize("which", ["pose", "blink"])
def test_tiny_shapes(which: str) -> None:
    model = _tiny(which).eval()
    x, audio = _tiny_inputs(model)
    cfg = model.cfg
    assert model.decode(x[:, :1], audio).shape == (2, 12, cfg.motion_dim)
    mu, logvar = model.encode(x, audio)
    assert mu.shape == logvar.shape == (12, 2, cfg.latent_dim)
    out, mu, logvar = model.train()(x, audio)
    assert out.shape == x.shape and mu.shape == (12, 2, cfg.latent_dim)


def test_same_generator_same_output() -> None:
    model = _tiny().eval()
    x, audio = _tiny_inputs(model)
    outs = [
        model.decode(x[:, :1], audio, generator=torch.Generator().manual_seed(s)) for s in (7, 7, 8)
    ]
    torch.testing.assert_close(outs[0], outs[1], atol=0, rtol=0)
    assert not torch.allclose(outs[0], outs[2])
    z = torch.randn((12, 2, model.cfg.latent_dim), generator=torch.Generator().manual_seed(7))
    torch.testing.assert_close(model.decode(x[:, :1], audio, z), outs[0], atol=0, rtol=0)


def test_padding_mask_zeroes_frames_and_input_checks() -> None:
    model = _tiny().eval()
    x, audio = _tiny_inputs(model)
    mask = torch.ones(2, 12, dtype=torch.bool)
    mask[1, 9:] = False
    out = model.decode(x[:, :1], audio, generator=torch.Generator().manual_seed(0), mask=mask)
    assert out[1, 9:].abs().max() == 0 and out[1, :9].abs().max() > 0
    with pytest.raises(ValueError, match="z has shape"):
        model.decode(x[:, :1], audio, torch.zeros(12, 2, 3))
    with pytest.raises(ValueError, match="audio must be"):
        model.decode(x[:, :1], audio[..., :3])
    with pytest.raises(ValueError, match="mask must be"):
        model.decode(x[:, :1], audio, mask=mask.float())
    with pytest.raises(ValueError, match="eval mode"):
        model.train().decode(x[:, :1], audio, attn_chunk=4)


@pytest.mark.parametrize("t, chunk", [(40, 7), (23, 64), (1100, None)])
def test_banded_equals_full_tiny(t: int, chunk: int | None) -> None:
    """Small window so that blocks, borders and the automatic switch (> 1024 frames) are all exercised."""
    model = _tiny(eval_window=5).eval()
    x, audio = _tiny_inputs(model, b=1, t=t)
    z = torch.randn(t, 1, model.cfg.latent_dim, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        full = model.decode(x[:, :1], audio, z, attn_chunk=0)
        banded = model.decode(x[:, :1], audio, z, attn_chunk=chunk)
    torch.testing.assert_close(banded, full, atol=1e-6, rtol=0)


def test_save_load_round_trip(tmp_path: Path) -> None:
    model = _tiny("blink").eval()
    save_file(model.state_dict(), str(tmp_path / "model.safetensors"))
    (tmp_path / "config.json").write_text(config_to_json(model.cfg))
    with torch.device("meta"):
        loaded = PoseBlinkCVAE(config_from_json((tmp_path / "config.json").read_text()))
    loaded.load_state_dict(load_file(str(tmp_path / "model.safetensors")), strict=True, assign=True)
    loaded.eval()
    x, audio = _tiny_inputs(model)
    z = torch.randn(12, 2, model.cfg.latent_dim)
    torch.testing.assert_close(loaded.decode(x[:, :1], audio, z), model.decode(x[:, :1], audio, z))
    assert config_from_state_dict(model.state_dict()) == PoseBlinkConfig(
        **{**model.cfg.__dict__, "max_distance": PoseBlinkConfig.max_distance}
    )


def test_training_backward_finite_grads() -> None:
    model = _tiny().train()
    x, audio = _tiny_inputs(model)
    out, mu, logvar = model(x, audio, generator=torch.Generator().manual_seed(0))
    kl = -0.5 * (1 + logvar - mu.square() - logvar.exp()).mean()
    ((out - (x - x[:, :1])).square().mean() + kl).backward()
    for name, p in model.named_parameters():
        assert p.grad is not None, name
        assert torch.isfinite(p.grad).all(), name
