"""Tiny random Diffused Heads networks for tests."""

from __future__ import annotations

import torch

from talkinghead.diffused_heads.configs import PRESETS
from talkinghead.diffused_heads.unet import DiffusedHeadsUNet


def random_tiny_unet(seed: int = 0) -> DiffusedHeadsUNet:
    """The tiny UNet with every zero-initialised tensor replaced by 0.05·N (as the golden weights do),
    so the output depends on every input; eval mode."""
    g = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    unet = DiffusedHeadsUNet(PRESETS["tiny"].unet)
    with torch.no_grad():
        for p in unet.parameters():
            if not p.any():
                p.copy_(0.05 * torch.randn(p.shape, generator=g))
    return unet.eval()
