"""The UNet's 3D convolutions run oneDNN on CPU at every clip length (``dawn.models.conv3d``).

PyTorch's own heuristic sends small batch-1 inputs (``N * C * F * H <= 20480``: a 40-frame
streaming window of the demo model) to the unfused ``slow_conv3d``; these tests pin the kernel and
check the result equals ``nn.Conv3d``'s.
"""

from __future__ import annotations

import pytest
import torch
from torch import nn
from torch.profiler import ProfilerActivity, profile

from talkinghead.dawn.configs import UNet3DConfig
from talkinghead.dawn.models.conv3d import Conv3d
from talkinghead.dawn.models.unet3d import UNet3D

ONEDNN = "aten::mkldnn_convolution"
SLOW = "aten::slow_conv3d_forward"


def _kernels(fn) -> dict[str, int]:
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        fn()
    names = [e.name for e in prof.events()]
    return {ONEDNN: names.count(ONEDNN), SLOW: names.count(SLOW)}


@pytest.mark.parametrize(("kernel", "padding"), [((1, 3, 3), (0, 1, 1)), (1, 0)])
def test_conv3d_equals_nn_conv3d_on_onednn(kernel, padding) -> None:
    torch.manual_seed(0)
    ours = Conv3d(32, 32, kernel, padding=padding)
    ref = nn.Conv3d(32, 32, kernel, padding=padding)
    ref.load_state_dict(ours.state_dict())
    x = torch.randn(1, 32, 40, 16, 16)  # the demo's streaming window: exactly on PyTorch's line
    with torch.no_grad():
        assert _kernels(lambda: ref(x))[SLOW] == 1  # what PyTorch picks by itself
        calls = _kernels(lambda: ours(x))
        torch.testing.assert_close(ours(x), ref(x), rtol=1e-5, atol=1e-4)
    assert calls == {ONEDNN: 1, SLOW: 0}


def test_unet_forward_has_no_slow_convolution() -> None:
    torch.manual_seed(0)
    unet = UNet3D(UNet3DConfig(dim=16)).eval().requires_grad_(False)
    cfg, frames = unet.cfg, 24  # 16 * 24 * 8 = 3072: far below the line at every level
    x = torch.randn(1, cfg.latent_channels, frames, 8, 8)
    cond = torch.randn(1, frames, cfg.cond_dim)
    source_emb = torch.randn(1, cfg.dim, 8, 8)
    with torch.no_grad():
        calls = _kernels(lambda: unet(x, torch.tensor([500]), cond, source_emb=source_emb))
    assert calls[SLOW] == 0 and calls[ONEDNN] > 0, calls


def test_training_keeps_pytorchs_choice_and_gradients() -> None:
    torch.manual_seed(0)
    conv = Conv3d(8, 8, (1, 3, 3), padding=(0, 1, 1))
    x = torch.randn(1, 8, 4, 8, 8, requires_grad=True)
    calls = _kernels(lambda: conv(x).sum().backward())
    assert calls[SLOW] == 1 and calls[ONEDNN] == 0
    assert x.grad is not None and conv.weight.grad is not None
