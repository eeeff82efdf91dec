"""3x3 convolution (stride 1, padding 1) by the Winograd algorithm, channels-last.

oneDNN has Winograd kernels for AVX-512 CPUs only; on AVX2 a 3x3 convolution runs as a direct
convolution with 9 multiply-adds per input channel and output pixel. Winograd F(m x m, 3x3) (Lavin &
Gray 2016) computes each m x m output tile from an (m+2) x (m+2) input tile with (m+2)² multiply-adds
per input channel: 4 per output pixel for m = 2, 2.25 for m = 4. The work becomes (m+2)² independent
matrix products ``(tiles, C_in) @ (C_in, C_out)``, one per tile position, run as one ``torch.bmm``.
The input and output transforms are a few additions per value, written here as strided slices of
channels-last tensors; the weight transform is done once, in float64, by :func:`winograd_weight`.

Accuracy in float32, against a float64 reference, on unit-variance outputs of 256 input channels
(tests/test_winograd.py): F(2x2) ~2e-6, *below* oneDNN's direct kernel (~1e-5: the products are summed
by the GEMM's blocked accumulation instead of one long chain); F(4x4) ~3e-5, a few times the direct
kernel's (its transforms hold coefficients up to 8 and 1/24). It pays where the GEMM dominates: wide layers
(>= 128 channels in and out on one AVX2 core), F(4x4) on large maps, F(2x2) on small ones where F(4x4)
has too few tiles per product; for narrow layers the transforms' memory passes cost more than the
saved multiplies.

Shapes: ``x`` (B, H, W, C_in) contiguous; transformed weight ((m+2)², C_in, C_out); out (B, H, W, C_out).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

# G of F(m, 3): the 3-tap filter -> its m + 2 transformed taps
_G = {
    2: ((1, 0, 0), (1 / 2, 1 / 2, 1 / 2), (1 / 2, -1 / 2, 1 / 2), (0, 0, 1)),
    4: (
        (1 / 4, 0, 0),
        (-1 / 6, -1 / 6, -1 / 6),
        (-1 / 6, 1 / 6, -1 / 6),
        (1 / 24, 1 / 12, 1 / 6),
        (1 / 24, -1 / 12, 1 / 6),
        (0, 0, 1),
    ),
}
TILES = tuple(_G)
# tiles per matrix product when a map is done in bands: enough rows for an efficient GEMM, few enough
# that a band's intermediates stay in cache (1.5x faster at 256 channels and 128 px than in one piece)
BAND_TILES = 256


def winograd_weight(weight: Tensor, tile: int = 2) -> Tensor:
    """(C_out, C_in, 3, 3) convolution weight -> ((tile+2)², C_in, C_out): G·w·Gᵀ, position major.

    Computed in float64 and rounded once to ``weight``'s dtype. ``tile``: m of F(m x m, 3x3), 2 or 4.
    """
    if weight.shape[-2:] != (3, 3):
        raise ValueError(f"expected a 3x3 convolution weight, got {tuple(weight.shape)}")
    if tile not in _G:
        raise ValueError(f"tile={tile} must be one of {TILES}")
    g = torch.tensor(_G[tile], dtype=torch.float64, device=weight.device)
    u = g @ weight.double() @ g.T  # (C_out, C_in, m+2, m+2)
    return u.flatten(2).permute(2, 1, 0).contiguous().to(weight.dtype)


def _input_taps(d: list[Tensor], out: tuple[Tensor, ...]) -> None:
    """Bᵀ along one axis: the m + 2 taps of every tile -> its m + 2 transformed values, into ``out``."""
    if len(d) == 4:  # F(2, 3): (d0 − d2, d1 + d2, d2 − d1, d1 − d3)
        torch.sub(d[0], d[2], out=out[0])
        torch.add(d[1], d[2], out=out[1])
        torch.sub(d[2], d[1], out=out[2])
        torch.sub(d[1], d[3], out=out[3])
        return
    # F(4, 3): rows of Bᵀ (4, 0, −5, 0, 1, 0), (0, −4, −4, 1, 1, 0), (0, 4, −4, −1, 1, 0),
    # (0, −2, −1, 2, 1, 0), (0, 2, −1, −2, 1, 0), (0, 4, 0, −5, 0, 1)
    a, b = torch.add(d[4], d[2], alpha=-4), torch.add(d[3], d[1], alpha=-4)
    torch.add(a, b, out=out[1])
    torch.sub(a, b, out=out[2])
    a, b = torch.sub(d[4], d[2]), torch.sub(d[3], d[1]).mul_(2)
    torch.add(a, b, out=out[3])
    torch.sub(a, b, out=out[4])
    torch.add(d[4], d[2], alpha=-5, out=out[0]).add_(d[0], alpha=4)
    torch.add(d[5], d[3], alpha=-5, out=out[5]).add_(d[1], alpha=4)


def _output_taps(m: tuple[Tensor, ...], out: list[Tensor]) -> None:
    """Aᵀ along one axis: m + 2 products -> m outputs, into ``out``."""
    if len(m) == 4:  # F(2, 3): Aᵀ = [[1, 1, 1, 0], [0, 1, −1, −1]]
        torch.add(m[0], m[1], out=out[0]).add_(m[2])
        torch.sub(m[1], m[2], out=out[1]).sub_(m[3])
        return
    # F(4, 3): rows of Aᵀ (1, 1, 1, 1, 1, 0), (0, 1, −1, 2, −2, 0), (0, 1, 1, 4, 4, 0), (0, 1, −1, 8, −8, 1)
    s1, d1 = torch.add(m[1], m[2]), torch.sub(m[1], m[2])
    s2, d2 = torch.add(m[3], m[4]), torch.sub(m[3], m[4])
    torch.add(s1, s2, out=out[0]).add_(m[0])
    torch.add(d1, d2, alpha=2, out=out[1])
    torch.add(s1, s2, alpha=4, out=out[2])
    torch.add(d1, d2, alpha=8, out=out[3]).add_(m[5])


def _input_transform(xp: Tensor, tile: int) -> Tensor:
    """Padded (B, R + 2, W + 2, C), R and W multiples of ``tile`` -> ((tile+2)², tiles, C): Bᵀ·d·B."""
    b, h, w, c = xp.shape
    a, nh, nw = tile + 2, (h - 2) // tile, (w - 2) // tile
    rows = xp.new_empty(
        a, b, nh, w, c
    )  # tile j of an axis reads padded positions tile·j ... + a − 1
    _input_taps([xp[:, k : k + tile * nh : tile] for k in range(a)], rows.unbind(0))
    out = xp.new_empty(a, a, b, nh, nw, c)
    _input_taps([rows[:, :, :, k : k + tile * nw : tile] for k in range(a)], out.unbind(1))
    return out.view(a * a, b * nh * nw, c)


def _output_transform(m: Tensor, tile: int, y: Tensor) -> None:
    """((tile+2)², tiles, C) -> Aᵀ·m·A of every tile, written into ``y`` (B, R, W, C)."""
    b, h, w, c = y.shape
    a, nh, nw = tile + 2, h // tile, w // tile
    m = m.view(a, a, b, nh, nw, c)
    half = m.new_empty(tile, a, b, nh, nw, c)  # Aᵀ applied along the tile's rows
    _output_taps(m.unbind(0), list(half.unbind(0)))
    y = y.view(b, nh, tile, nw, tile, c)
    for row in range(tile):
        _output_taps(half[row].unbind(0), [y[:, :, row, :, col] for col in range(tile)])


def winograd_conv3x3(x: Tensor, weight: Tensor, bias: Tensor | None = None) -> Tensor:
    """3x3 convolution with stride 1 and zero padding 1, channels-last.

    Large maps are done in bands of rows of about ``BAND_TILES`` tiles each, so that a band's
    transformed input and products stay in cache.

    Args:
        x: (B, H, W, C_in), contiguous (a channels-last NCHW tensor permuted to NHWC is).
        weight: ((m+2)², C_in, C_out) from :func:`winograd_weight`; m (2 or 4) follows from its size.
        bias: (C_out,) or None.
    Returns:
        (B, H, W, C_out), contiguous.
    """
    tile = {(m + 2) ** 2: m for m in TILES}.get(weight.shape[0])
    if tile is None:
        raise ValueError(f"weight {tuple(weight.shape)} is not a winograd_weight")
    b, h, w, _ = x.shape
    extra_h, extra_w = -h % tile, -w % tile
    if extra_h or extra_w:  # zero rows / columns make whole tiles; cropped afterwards
        y = winograd_conv3x3(F.pad(x, (0, 0, 0, extra_w, 0, extra_h)), weight, bias)
        return y[:, :h, :w].contiguous()
    xp = F.pad(x, (0, 0, 1, 1, 1, 1))
    y = x.new_empty(b, h, w, weight.shape[-1])
    band = tile * max(1, BAND_TILES // (b * (w // tile)))  # rows per band
    for top in range(0, h, band):
        bottom = min(h, top + band)
        m = torch.bmm(_input_transform(xp[:, top : bottom + 2], tile), weight)
        _output_transform(m, tile, y[:, top:bottom])
    return y if bias is None else y.add_(bias)
