"""Tiny random Diffused Heads networks for tests."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import torch

from talkinghead.diffused_heads.configs import PRESETS, DiffusedHeadsUNetConfig
from talkinghead.diffused_heads.unet import DiffusedHeadsUNet

# a small network whose 3x3 convolutions are wide enough (>= 128 channels) for the fast path's
# Winograd convolutions and channels-last layout: F(4x4) at 32 px, F(2x2) at 16 px
WIDE = replace(
    PRESETS["tiny"].unet,
    image_size=32,
    model_channels=128,
    channel_mult=(1, 1),
    attention_resolutions=(16,),
    num_head_channels=64,
    num_groups=32,
)


def random_unet(cfg: DiffusedHeadsUNetConfig, seed: int = 0) -> DiffusedHeadsUNet:
    """A UNet of ``cfg`` with every zero-initialised tensor replaced by 0.05·N (as the golden weights
    do), so the output depends on every input; eval mode."""
    g = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    unet = DiffusedHeadsUNet(cfg)
    with torch.no_grad():
        for p in unet.parameters():
            if not p.any():
                p.copy_(0.05 * torch.randn(p.shape, generator=g))
    return unet.eval()


def random_tiny_unet(seed: int = 0) -> DiffusedHeadsUNet:
    """The tiny UNet of ``random_unet``."""
    return random_unet(PRESETS["tiny"].unet, seed)


def write_tiny_model_dir(out: Path, prediction: str = "eps") -> Path:
    """A model directory of the tiny UNet (``random_tiny_unet(0)``) and a random tiny audio encoder,
    marked as predicting ``prediction``."""
    from talkinghead.diffused_heads.audio_encoder import SDAAudioEncoder
    from talkinghead.diffused_heads.convert import write_model_dir

    tiny = PRESETS["tiny"]
    torch.manual_seed(0)
    encoder = SDAAudioEncoder(tiny.audio_encoder).eval()
    parts = {
        "unet": (random_tiny_unet(0), tiny.unet, {"source_file": "random"}),
        "audio_encoder": (encoder, tiny.audio_encoder, {"source_file": "random"}),
    }
    diffusion = replace(tiny.diffusion, prediction=prediction)
    return write_model_dir(out, parts, replace(tiny, diffusion=diffusion))
