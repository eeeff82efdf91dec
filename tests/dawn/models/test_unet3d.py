"""A2V-FDM UNet3D: golden parity with the official denoiser, face-location encoder, tiny preset."""

from __future__ import annotations

import pytest
import torch
from conftest import load_golden, max_rel_error
from safetensors.torch import load_file, save_file

from talkinghead.dawn.configs import PRESETS, UNet3DConfig
from talkinghead.dawn.models.face_location import FaceLocationEncoder, bbox_mask
from talkinghead.dawn.models.unet3d import UNet3D, config_from_state_dict, strip_official_extras

# float32 re-implementation: the source channels are convolved separately (2D conv, bias once),
# the cross-attention softmax and the local attention reorder sums, so outputs differ from the
# official by float32 rounding amplified through ~40 layers: measured <= 2e-5 relative; 1e-4 bound.
REL_TOL = 1e-4


def golden_unet_state() -> dict[str, torch.Tensor]:
    """The golden ``denoise_fn.*`` tensors without the prefix, the schedule and the rotary copies."""
    sd = load_golden("a2v128_reduced")
    unet = {k.removeprefix("denoise_fn."): v for k, v in sd.items() if k.startswith("denoise_fn.")}
    assert len(sd) - len(unet) == 12  # diffusion schedule buffers
    stripped = strip_official_extras(unet)
    assert len(unet) - len(stripped) == 10  # the shared rotary freqs, once per temporal layer
    return stripped


@pytest.fixture(scope="module")
def golden_unet(golden_dir) -> UNet3D:
    sd = golden_unet_state()
    model = UNet3D(config_from_state_dict(sd)).eval()
    model.load_state_dict(sd, strict=True)
    return model


@pytest.fixture(scope="module")
def io(golden_dir) -> dict[str, torch.Tensor]:
    return load_golden("a2v128_reduced_io")


def _source(io: dict[str, torch.Tensor], call: str) -> torch.Tensor:
    return torch.cat([io[f"{call}.internal.fea"], io[f"{call}.input.bbox_fea"]], dim=1)


def _run(model: UNet3D, io: dict[str, torch.Tensor], call: str, **kw: object) -> torch.Tensor:
    with torch.no_grad():
        return model(
            io[f"{call}.input.x"],
            io[f"{call}.input.time"],
            io[f"{call}.input.cond"],
            _source(io, call),
            **kw,
        )


def test_config_from_golden_state() -> None:
    cfg = config_from_state_dict(golden_unet_state())
    assert cfg == UNet3DConfig(dim=16)


@pytest.mark.parametrize("attention", ["local", "full"])
def test_golden_u1_window_active(golden_unet, io, attention: str) -> None:
    out = _run(golden_unet, io, "U1", attention=attention)  # F=48 > window 40
    assert max_rel_error(out, io["U1.output"]) < REL_TOL


def test_golden_u1_null_cond(golden_unet, io) -> None:
    out = _run(golden_unet, io, "U1", null_cond=True)
    assert max_rel_error(out, io["U1.output_null_cond"]) < REL_TOL


def test_golden_u2_batch(golden_unet, io) -> None:
    out = _run(golden_unet, io, "U2")  # B=2, F=16, t=[999, 37]
    assert max_rel_error(out, io["U2.output"]) < REL_TOL


def test_golden_internals(golden_unet, io) -> None:
    with torch.no_grad():
        temb = golden_unet.time_mlp(io["U1.input.time"])
        bias = golden_unet.time_rel_pos_bias(48, window=40)
    assert max_rel_error(temb, io["U1.internal.time_mlp"]) < 1e-6
    torch.testing.assert_close(bias, io["U1.internal.time_rel_pos_bias"], atol=0, rtol=0)


@pytest.mark.parametrize("call", ["U1", "U2"])
def test_golden_face_location(golden_dir, io, call: str) -> None:
    bbox = io[f"{call}.input.bbox"]
    before = bbox.clone()
    mask = bbox_mask(bbox, 128, faithful=True)
    torch.testing.assert_close(bbox, before, atol=0, rtol=0)  # the input is not mutated
    torch.testing.assert_close(mask, io[f"{call}.internal.bbox_mask"], atol=0, rtol=0)
    enc = FaceLocationEncoder()
    enc.load_state_dict(load_file(str(golden_dir / "a2v128_face_loc_emb.safetensors")), strict=True)
    with torch.no_grad():
        assert max_rel_error(enc(mask), io[f"{call}.input.bbox_fea"]) < 1e-6


def test_bbox_mask_axes() -> None:
    # a wide image: x in [0, W), y in [0, H); the default scales x by W and y by H
    bbox = torch.tensor([[10.0, 19.0, 0.0, 9.0, 20.0, 40.0]])  # x 10..19, y 0..9, H=20, W=40
    mask = bbox_mask(bbox, 8)[0, 0]
    rows, cols = mask.nonzero().unbind(1)
    assert (rows.min(), rows.max(), cols.min(), cols.max()) == (0, 4, 2, 4)
    square = torch.tensor([[3.0, 9.0, 5.0, 20.0, 32.0, 32.0]])
    torch.testing.assert_close(bbox_mask(square, 16), bbox_mask(square, 16, faithful=True))


# -- tiny preset ----------------------------------------------------------------------------------


@pytest.fixture()
def tiny() -> tuple[UNet3D, tuple[torch.Tensor, ...]]:
    cfg = PRESETS["tiny"].unet
    torch.manual_seed(0)
    model = UNet3D(cfg)
    g = torch.Generator().manual_seed(0)
    b, f, s = 2, 14, 8  # 14 frames > block + 2 * window = 12: the banded path is exercised
    x = torch.randn(b, cfg.latent_channels, f, s, s, generator=g)
    t = torch.tensor([3, 700])
    cond = torch.randn(b, f, cfg.cond_dim, generator=g)
    source = torch.randn(b, cfg.in_channels - cfg.latent_channels, s, s, generator=g)
    return model, (x, t, cond, source)


def test_tiny_shape_and_modes(tiny) -> None:
    model, (x, t, cond, source) = tiny
    out = model(x, t, cond, source)
    assert out.shape == x.shape and torch.isfinite(out).all()
    full = model(x, t, cond, source, attention="full")
    torch.testing.assert_close(out, full, atol=1e-5, rtol=1e-5)
    wider = model(x, t, cond, source, window=20)
    assert (wider - out).abs().max() > 1e-6  # the window override changes the attention span


def test_tiny_precomputed_source_matches_raw(tiny) -> None:
    model, (x, t, cond, source) = tiny
    raw = model(x, t, cond, source)
    cached = model(x, t, cond, source_emb=model.precompute_source(source))
    torch.testing.assert_close(cached, raw, atol=0, rtol=0)
    # and equals the official concatenate-and-convolve first layer
    x_in = torch.cat([x, source[:, :, None].expand(-1, -1, x.shape[2], -1, -1)], dim=1)
    ours = model._init_conv(x, model.precompute_source(source))
    torch.testing.assert_close(ours, model.init_conv(x_in), atol=1e-5, rtol=1e-5)


def test_tiny_null_cond_mask(tiny) -> None:
    model, (x, t, cond, source) = tiny
    with torch.no_grad():
        null = model(x, t, cond, source, null_cond=True)
        all_masked = torch.ones(cond.shape[:2], dtype=torch.bool)
        torch.testing.assert_close(model(x, t, cond, source, null_cond_mask=all_masked), null)
        torch.testing.assert_close(model(x, t, torch.zeros_like(cond), source), null)
        half = torch.zeros(cond.shape[:2], dtype=torch.bool)
        half[:, ::2] = True
        dropped = cond.clone()
        dropped[:, ::2] = 0
        torch.testing.assert_close(
            model(x, t, cond, source, null_cond_mask=half), model(x, t, dropped, source)
        )


def test_tiny_gradients_finite(tiny) -> None:
    model, (x, t, cond, source) = tiny
    model(x, t, cond, source).square().mean().backward()
    unused = ("final_conv.0.cross_attn", "occlusion_map.0.cross_attn")  # unused, as official
    for name, p in model.named_parameters():
        if name.startswith(unused):
            assert p.grad is None, name
        else:
            assert p.grad is not None and torch.isfinite(p.grad).all(), name


def test_tiny_save_load_round_trip(tiny, tmp_path) -> None:
    model, (x, t, cond, source) = tiny
    save_file(model.state_dict(), str(tmp_path / "model.safetensors"))
    again = UNet3D(PRESETS["tiny"].unet)
    again.load_state_dict(load_file(str(tmp_path / "model.safetensors")), strict=True)
    with torch.no_grad():
        torch.testing.assert_close(
            again(x, t, cond, source), model(x, t, cond, source), atol=0, rtol=0
        )
    cfg = PRESETS["tiny"].unet
    unknowable = {
        "resnet_groups": 4,
        "rel_pos_max_distance": 8,
        "window": 4,
        "face_loc_channels": 4,
    }
    assert config_from_state_dict(again.state_dict(), **unknowable) == cfg


def test_bad_inputs_raise(tiny) -> None:
    model, (x, t, cond, source) = tiny
    with pytest.raises(ValueError, match="exactly one"):
        model(x, t, cond)
    with pytest.raises(ValueError, match="cond"):
        model(x, t, cond[:, :3], source)
    with pytest.raises(ValueError, match="attention"):
        model(x, t, cond, source, attention="sparse")


def test_spatial_linear_attention_in_frame_chunks_equals_whole_clip() -> None:
    """The layer runs in frame chunks (memory flat in the clip length) and gives the whole-clip
    result: chunks of 1 frame, of 3 frames (uneven split of 7) and of all 7."""
    from talkinghead.dawn.models.layers3d import SpatialLinearAttention

    torch.manual_seed(0)
    x = torch.randn(1, 8, 7, 4, 4)
    layer = SpatialLinearAttention(8, heads=2, dim_head=4)
    with torch.no_grad():
        whole = layer(x, max_elements=7 * 24 * 16)
        for frames in (1, 3):
            chunked = layer(x, max_elements=frames * 24 * 16)
            torch.testing.assert_close(chunked, whole, atol=1e-5, rtol=0)
