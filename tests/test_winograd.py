"""Winograd F(2x2, 3x3) and F(4x4, 3x3) convolutions against ``F.conv2d``: shapes, odd sizes, accuracy."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from talkinghead.winograd import winograd_conv3x3, winograd_weight


def _conv(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, tile: int):
    """Winograd over an NCHW tensor, through the channels-last layout it works in."""
    nhwc = x.permute(0, 2, 3, 1).contiguous()
    return winograd_conv3x3(nhwc, winograd_weight(weight, tile), bias).permute(0, 3, 1, 2)


@pytest.mark.parametrize("tile", [2, 4])
@pytest.mark.parametrize(
    ("batch", "c_in", "c_out", "height", "width"),
    [
        (1, 8, 5, 8, 8),
        (2, 16, 12, 7, 9),
        (3, 4, 4, 1, 1),
        (1, 3, 7, 2, 6),
        (2, 4, 3, 70, 72),  # > BAND_TILES tiles: done in bands of rows, the last one shorter
    ],
)
def test_matches_conv2d(tile, batch, c_in, c_out, height, width):
    g = torch.Generator().manual_seed(0)
    x = torch.randn(batch, c_in, height, width, generator=g)
    weight = torch.randn(c_out, c_in, 3, 3, generator=g)
    bias = torch.randn(c_out, generator=g)
    ref = F.conv2d(x.double(), weight.double(), bias.double(), padding=1)
    out = _conv(x, weight, bias, tile)
    assert out.shape == ref.shape and out.dtype == torch.float32
    tol = 2e-5 * ref.abs().max()  # float32 rounding of sums of up to 144 products
    assert (out.double() - ref).abs().max() < tol
    no_bias = _conv(x, weight, None, tile).double() + bias.double()[:, None, None]
    assert (no_bias - ref).abs().max() < tol


def test_accuracy_against_the_direct_kernel():
    """float32 error against float64 on a 256-channel layer with unit-variance outputs: F(2x2) not above
    oneDNN's direct kernel, F(4x4) a few times above it (its transforms' coefficients reach 8) and below
    1e-4."""
    g = torch.Generator().manual_seed(0)
    x = torch.randn(1, 256, 16, 16, generator=g)
    weight = torch.randn(256, 256, 3, 3, generator=g) / 48
    ref = F.conv2d(x.double(), weight.double(), padding=1)
    direct = (F.conv2d(x, weight, padding=1).double() - ref).abs().max().item()
    f2, f4 = ((_conv(x, weight, None, t).double() - ref).abs().max().item() for t in (2, 4))
    # oneDNN's direct kernel's own error varies about 10x between CPUs (1.2e-6 on an AVX-512 Xeon),
    # so the bounds are absolute: F(2x2) within 1e-5, F(4x4) within 1e-4 and never the better one
    assert f2 <= 1e-5 and f2 <= f4 <= 1e-4, (f2, f4, direct)


def test_bad_weights_refused():
    with pytest.raises(ValueError, match="3x3"):
        winograd_weight(torch.zeros(4, 4, 1, 1))
    with pytest.raises(ValueError, match="tile"):
        winograd_weight(torch.zeros(4, 4, 3, 3), tile=6)
    with pytest.raises(ValueError, match="winograd_weight"):
        winograd_conv3x3(torch.zeros(1, 4, 4, 4), torch.zeros(9, 4, 4))
