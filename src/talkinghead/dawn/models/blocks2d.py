"""2D convolutional building blocks of the LFG (dawn_spec.md §2.1; MRAA/FOMM lineage).

All normalisations are ``nn.BatchNorm2d`` (the official ``SynchronizedBatchNorm2d`` is numerically a
BatchNorm2d with eps 1e-5, momentum 0.1), so checkpoints carry running statistics. Attribute names
(``conv``, ``norm``, ``conv1``/``norm1`` ..., ``encoder.down_blocks``, ``decoder.up_blocks``,
``down.weight``) equal the official ones so official state dicts load unchanged.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn


class SameBlock2d(nn.Module):
    """Conv -> BatchNorm -> ReLU at constant resolution. ``x: (B, C_in, H, W) -> (B, C_out, H, W)``."""

    def __init__(self, in_features: int, out_features: int, kernel_size: int = 3) -> None:
        super().__init__()
        self.conv = nn.Conv2d(in_features, out_features, kernel_size, padding=kernel_size // 2)
        self.norm = nn.BatchNorm2d(out_features)

    def forward(self, x: Tensor) -> Tensor:
        return F.relu(self.norm(self.conv(x)))


class DownBlock2d(nn.Module):
    """Conv3x3 -> BatchNorm -> ReLU -> AvgPool2x2. ``(B, C_in, H, W) -> (B, C_out, H/2, W/2)``."""

    def __init__(self, in_features: int, out_features: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(in_features, out_features, 3, padding=1)
        self.norm = nn.BatchNorm2d(out_features)

    def forward(self, x: Tensor) -> Tensor:
        return F.avg_pool2d(F.relu(self.norm(self.conv(x))), 2)


class UpBlock2d(nn.Module):
    """Nearest x2 upsample -> Conv3x3 -> BatchNorm -> ReLU. ``(B, C_in, H, W) -> (B, C_out, 2H, 2W)``."""

    def __init__(self, in_features: int, out_features: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(in_features, out_features, 3, padding=1)
        self.norm = nn.BatchNorm2d(out_features)

    def forward(self, x: Tensor) -> Tensor:
        x = F.interpolate(x, scale_factor=2.0, mode="nearest")
        return F.relu(self.norm(self.conv(x)))


class ResBlock2d(nn.Module):
    """Pre-activation residual block: x + Conv(ReLU(BN(Conv(ReLU(BN(x)))))). Shape-preserving."""

    def __init__(self, features: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(features, features, 3, padding=1)
        self.conv2 = nn.Conv2d(features, features, 3, padding=1)
        self.norm1 = nn.BatchNorm2d(features)
        self.norm2 = nn.BatchNorm2d(features)

    def forward(self, x: Tensor) -> Tensor:
        out = self.conv1(F.relu(self.norm1(x)))
        out = self.conv2(F.relu(self.norm2(out)))
        return out + x


def level_width(block_expansion: int, max_features: int, level: int) -> int:
    """Channels at hourglass/encoder ``level``: ``min(max_features, block_expansion * 2**level)``."""
    return min(max_features, block_expansion * 2**level)


class HourglassEncoder(nn.Module):
    """``num_blocks`` DownBlock2d's; returns the input and every block output (for skips).

    ``x: (B, C_in, H, W)`` -> list of ``num_blocks + 1`` tensors, the last at ``H / 2**num_blocks``.
    """

    def __init__(
        self, block_expansion: int, in_features: int, num_blocks: int, max_features: int
    ) -> None:
        super().__init__()
        self.down_blocks = nn.ModuleList(
            DownBlock2d(
                in_features if i == 0 else level_width(block_expansion, max_features, i),
                level_width(block_expansion, max_features, i + 1),
            )
            for i in range(num_blocks)
        )

    def forward(self, x: Tensor) -> list[Tensor]:
        outs = [x]
        for block in self.down_blocks:
            outs.append(block(outs[-1]))
        return outs


class HourglassDecoder(nn.Module):
    """UpBlock2d's that consume the encoder outputs deepest-first, concatenating each skip.

    Output: ``(B, block_expansion + in_features, H, W)`` (``out_filters`` channels).
    """

    def __init__(
        self, block_expansion: int, in_features: int, num_blocks: int, max_features: int
    ) -> None:
        super().__init__()
        blocks = []
        for i in reversed(range(num_blocks)):
            # Every block after the deepest one also sees the concatenated skip: twice the width.
            mult = 1 if i == num_blocks - 1 else 2
            blocks.append(
                UpBlock2d(
                    mult * level_width(block_expansion, max_features, i + 1),
                    level_width(block_expansion, max_features, i),
                )
            )
        self.up_blocks = nn.ModuleList(blocks)
        self.out_filters = block_expansion + in_features

    def forward(self, features: list[Tensor]) -> Tensor:
        skips = list(features)
        out = skips.pop()
        for block in self.up_blocks:
            out = torch.cat([block(out), skips.pop()], dim=1)
        return out


class Hourglass(nn.Module):
    """U-Net style hourglass: ``(B, in_features, H, W) -> (B, out_filters, H, W)``.

    ``H`` and ``W`` must be divisible by ``2**num_blocks``.
    """

    def __init__(
        self, block_expansion: int, in_features: int, num_blocks: int = 3, max_features: int = 256
    ) -> None:
        super().__init__()
        self.encoder = HourglassEncoder(block_expansion, in_features, num_blocks, max_features)
        self.decoder = HourglassDecoder(block_expansion, in_features, num_blocks, max_features)
        self.out_filters = self.decoder.out_filters
        self.num_blocks = num_blocks

    def forward(self, x: Tensor) -> Tensor:
        factor = 2**self.num_blocks
        if x.shape[-1] % factor or x.shape[-2] % factor:
            raise ValueError(
                f"Hourglass input {tuple(x.shape[-2:])} must be divisible by 2**{self.num_blocks}"
            )
        return self.decoder(self.encoder(x))


def gaussian_kernel2d(channels: int, scale: float) -> Tensor:
    """Normalised Gaussian of sigma ``(1/scale - 1) / 2``, side ``2*round(4*sigma) + 1``.

    Returns a depthwise conv weight ``(channels, 1, k, k)`` in float32.
    """
    sigma = (1.0 / scale - 1.0) / 2.0
    size = 2 * round(sigma * 4) + 1
    coords = torch.arange(size, dtype=torch.float32) - (size - 1) / 2
    g = torch.exp(-(coords**2) / (2 * sigma**2))
    kernel = g[:, None] * g[None, :]
    kernel = kernel / kernel.sum()
    return kernel.expand(channels, 1, size, size).clone()


class AntiAliasInterpolation2d(nn.Module):
    """Band-limited downsampling: Gaussian blur then strided subsampling by ``1/scale``.

    ``x: (B, C, H, W) -> (B, C, H*scale, W*scale)``. The kernel is the persistent buffer ``weight``
    (it is in the official checkpoints as ``*.down.weight``), rebuilt from ``scale`` at construction.
    """

    def __init__(self, channels: int, scale: float) -> None:
        super().__init__()
        if not 0.0 < scale <= 1.0:
            raise ValueError(f"scale={scale} must be in (0, 1]")
        self.scale = scale
        self.stride = int(1 / scale)
        self.register_buffer("weight", gaussian_kernel2d(channels, scale))

    def forward(self, x: Tensor) -> Tensor:
        if self.scale == 1.0:
            return x
        size = self.weight.shape[-1]
        before = size // 2
        after = before - 1 if size % 2 == 0 else before
        x = F.pad(x, (before, after, before, after))
        x = F.conv2d(x, self.weight.to(x.dtype), groups=x.shape[1])
        return x[:, :, :: self.stride, :: self.stride]
