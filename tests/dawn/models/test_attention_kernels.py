"""Every attention of the UNet's inference path runs PyTorch's fused CPU flash kernel.

The math fallback (``_scaled_dot_product_attention_math``: logits materialised, softmax and mask in
separate passes) was half of a UNet forward's CPU time; it is what PyTorch silently takes when the
inputs are not 4-D or the mask does not broadcast as the fused kernel wants. These tests pin the
kernel for the shapes the UNet makes (banded and dense temporal attention, the mid spatial attention)
so that a later change of layout cannot fall back without failing here.
"""

from __future__ import annotations

from collections.abc import Callable

import pytest
import torch
from torch.profiler import ProfilerActivity, profile

from talkinghead.dawn.configs import UNet3DConfig
from talkinghead.dawn.models.local_attention import default_block_size, local_attention
from talkinghead.dawn.models.unet3d import UNet3D

FLASH = "aten::_scaled_dot_product_flash_attention_for_cpu"
MATH = "aten::_scaled_dot_product_attention_math"


def _kernel_calls(fn: Callable[[], object]) -> dict[str, int]:
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        fn()
    names = [e.name for e in prof.events()]
    return {FLASH: names.count(FLASH), MATH: names.count(MATH)}


@pytest.fixture(scope="module")
def unet() -> UNet3D:
    torch.manual_seed(0)
    # the golden / reduced-golden widths (dim 16, four levels, 8 heads x 32, window 40); the kernel
    # choice depends on shapes and dtypes only, so random weights and an 8x8 latent do
    return UNet3D(UNet3DConfig(dim=16)).eval().requires_grad_(False)


def _forward(model: UNet3D, frames: int, **kw: object) -> None:
    g = torch.Generator().manual_seed(0)
    cfg = model.cfg
    x = torch.randn(1, cfg.latent_channels, frames, 8, 8, generator=g)
    cond = torch.randn(1, frames, cfg.cond_dim, generator=g)
    source_emb = torch.randn(1, cfg.dim, 8, 8, generator=g)
    with torch.no_grad():
        model(x, torch.tensor([500]), cond, source_emb=source_emb, **kw)


@pytest.mark.parametrize(
    ("frames", "kw"),
    [
        (200, {}),  # banded: 5 query blocks of 40 frames (reduced-golden benchmark length)
        (130, {}),  # banded with a short last block
        (48, {}),  # dense band-masked (golden U1: F <= block + 2 * window)
        (48, {"attention": "full"}),  # the faithful O(F^2) mode
    ],
)
def test_unet_attention_runs_the_flash_kernel(unet: UNet3D, frames: int, kw: dict) -> None:
    calls = _kernel_calls(lambda: _forward(unet, frames, **kw))
    assert calls[MATH] == 0, calls
    banded = frames > 48 and not kw
    blocks = -(-frames // default_block_size(frames, 40)) if banded else 1
    # 10 temporal layers (one chunk each at 8x8) + the mid spatial attention
    assert calls[FLASH] == 10 * blocks + 1, calls


def test_banded_attention_flash_in_bfloat16() -> None:
    g = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(6, 8, 200, 32, generator=g, dtype=torch.bfloat16) for _ in range(3))
    table = torch.randn(8, 81, generator=g)
    calls = _kernel_calls(lambda: local_attention(q, k, v, table, 40, scale=32**-0.5))
    assert calls == {FLASH: 5, MATH: 0}


def test_trainable_bias_falls_back_to_math_with_gradients() -> None:
    # a mask that needs a gradient is not supported by the fused kernel: PyTorch takes the math
    # kernel by itself, so training the relative bias keeps working
    g = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(2, 8, 100, 32, generator=g) for _ in range(3))
    table = torch.randn(8, 81, generator=g, requires_grad=True)
    calls = _kernel_calls(lambda: local_attention(q, k, v, table, 40).sum().backward())
    assert calls[MATH] > 0 and calls[FLASH] == 0
    assert table.grad is not None and table.grad.abs().sum() > 0
