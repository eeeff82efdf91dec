"""DiffTalk networks at the tiny preset: shapes, determinism, save/load round trip, finite gradients."""

from __future__ import annotations

from pathlib import Path

import torch

from talkinghead.difftalk.configs import PRESETS, DiffTalkConfig
from talkinghead.difftalk.model_dir import DiffTalkModules, load_model_dir, save_model_dir
from talkinghead.difftalk.networks import decode_latents, encode_images, predict_eps

CFG = PRESETS["tiny"]


def _inputs(batch: int = 2, seed: int = 0) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    c, h = CFG.condition, CFG.latent_size
    return {
        "images": torch.rand(batch, 3, CFG.image_size, CFG.image_size, generator=g) * 2 - 1,
        "audio": torch.randn(batch, c.smooth_frames, c.audio_window, c.audio_channels, generator=g),
        "landmarks": torch.rand(batch, c.num_landmarks, 2, generator=g) * CFG.image_size,
        "z": torch.randn(batch, 3, h, h, generator=g),
        "t": torch.tensor([999, 3][:batch]),
    }


def _forward(m: DiffTalkModules, x: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    latents = encode_images(m.first_stage, x["images"])
    context = m.condition(x["audio"], x["landmarks"])
    eps = predict_eps(m.unet, x["z"], x["t"], latents, latents.flip(0), context)
    return {
        "latents": latents,
        "context": context,
        "eps": eps,
        "decoded": decode_latents(m.first_stage, x["z"]),
    }


def test_shapes_and_determinism(make_modules) -> None:
    x = _inputs()
    with torch.no_grad():
        out = _forward(make_modules(), x)
        again = _forward(make_modules(), x)
    h = CFG.latent_size
    assert out["latents"].shape == (2, 3, h, h)
    assert out["context"].shape == (2, 1, CFG.denoiser.context_dim)
    assert out["eps"].shape == (2, 3, h, h)
    assert out["decoded"].shape == (2, 3, CFG.image_size, CFG.image_size)
    for name, value in out.items():
        assert torch.equal(value, again[name]), name


def test_audio_attention_weights_sum_to_one(make_modules) -> None:
    m = make_modules()
    x = _inputs()
    codes = m.condition.audio(x["audio"].flatten(0, 1)).unflatten(
        0, (2, CFG.condition.smooth_frames)
    )
    smoothed, weights = m.condition.audio_smooth(codes)
    assert weights.shape == (2, 1, CFG.condition.smooth_frames)
    assert torch.allclose(weights.sum(-1), torch.ones(2, 1))
    assert torch.allclose(smoothed, (weights.transpose(1, 2) * codes).sum(1), atol=1e-6)


def test_save_load_round_trip(make_modules, tmp_path: Path) -> None:
    m = make_modules()
    save_model_dir(m, tmp_path / "tiny", {"source_file": "random"})
    loaded = load_model_dir(tmp_path / "tiny")
    assert loaded.config == CFG and isinstance(loaded.config, DiffTalkConfig)
    x = _inputs()
    with torch.no_grad():
        a, b = _forward(m, x), _forward(loaded, x)
    for name in a:
        assert torch.equal(a[name], b[name]), name


def test_gradients_are_finite_everywhere(make_modules) -> None:
    m = make_modules()
    for net in m.networks().values():
        net.train()
    x = _inputs()
    out = _forward(m, x)
    # zero-initialised output convs would hide gradients of everything before them
    loss = (
        out["eps"].square().mean() + out["decoded"].square().mean() + out["latents"].square().mean()
    )
    loss.backward()
    for name, net in m.networks().items():
        trainable = [(n, p) for n, p in net.named_parameters() if p.requires_grad]
        missing = [n for n, p in trainable if p.grad is None and not n.startswith("quantize.")]
        assert not missing, f"{name}: no gradient for {missing[:5]}"
        bad = [n for n, p in trainable if p.grad is not None and not torch.isfinite(p.grad).all()]
        assert not bad, f"{name}: non-finite gradients in {bad[:5]}"


def test_the_small_preset_builds_at_its_stated_size() -> None:
    from talkinghead.difftalk.networks import build_denoiser, build_first_stage

    small = PRESETS["small"]
    assert small.latent_size == 16 and small.audio_features == "logmel"

    def millions(net: torch.nn.Module) -> float:
        return sum(p.numel() for p in net.parameters()) / 1e6

    assert round(millions(build_first_stage(small.first_stage)), 1) == 0.7
    assert round(millions(build_denoiser(small.denoiser)), 1) == 6.7
    assert small.condition.audio_channels == 80 and small.condition.context_dim == 128
