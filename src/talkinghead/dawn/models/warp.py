"""Warping helpers of the LFG: coordinate grids, flow resizing, grid_sample warps, region motions.

Conventions (dawn_spec.md §2.1, §2.1.3, §2.1.4): a flow / sampling grid is ``(N, h, w, 2)`` holding
``(x, y)`` source coordinates in ``[-1, 1]``, consumed by ``F.grid_sample`` (bilinear, zeros padding,
``align_corners=False``). Region parameters are the region predictor's ``shift`` ``(B, K, 2)``,
``covar`` ``(B, K, 2, 2)`` and ``affine`` ``(B, K, 2, 2)`` (paper Sec. 3.1: the LFG's motion model).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import Tensor


def make_coordinate_grid(
    height: int, width: int, *, device: torch.device | None = None, dtype: torch.dtype | None = None
) -> Tensor:
    """Pixel-centre grid ``(height, width, 2)`` with ``x = 2j/(w-1) - 1``, ``y = 2i/(h-1) - 1``."""
    dtype = dtype or torch.get_default_dtype()
    x = 2 * (torch.arange(width, device=device, dtype=dtype) / (width - 1)) - 1
    y = 2 * (torch.arange(height, device=device, dtype=dtype) / (height - 1)) - 1
    return torch.stack(
        [x.view(1, width).expand(height, width), y.view(height, 1).expand(height, width)], dim=-1
    )


def resize_flow(flow: Tensor, size: tuple[int, int]) -> Tensor:
    """Bilinearly resize a grid ``(N, h, w, 2)`` to ``(N, *size, 2)`` (align_corners=False)."""
    if tuple(flow.shape[1:3]) == tuple(size):
        return flow
    flow = rearrange(flow, "n h w c -> n c h w")
    flow = F.interpolate(flow, size=size, mode="bilinear", align_corners=False)
    return rearrange(flow, "n c h w -> n h w c")


def resize_map(x: Tensor, size: tuple[int, int]) -> Tensor:
    """Bilinearly resize a map ``(N, C, h, w)`` to ``(N, C, *size)`` (align_corners=False)."""
    if tuple(x.shape[-2:]) == tuple(size):
        return x
    return F.interpolate(x, size=size, mode="bilinear", align_corners=False)


def warp(inp: Tensor, flow: Tensor) -> Tensor:
    """Backward-warp ``inp`` by ``flow`` (the official ``deform_input``).

    Args:
        inp: ``(B, C, H, W)`` with ``B == N``, or ``B == 1`` to warp one image by ``N`` flows
            without materialising ``N`` copies of it.
        flow: ``(N, h, w, 2)`` sampling grid; resized bilinearly to ``(H, W)`` first.

    Returns:
        ``(N, C, H, W)``.
    """
    if flow.ndim != 4 or flow.shape[-1] != 2:
        raise ValueError(f"flow must be (N, h, w, 2), got {tuple(flow.shape)}")
    n = flow.shape[0]
    flow = resize_flow(flow, tuple(inp.shape[-2:]))
    if inp.shape[0] == n:
        return F.grid_sample(inp, flow, mode="bilinear", padding_mode="zeros", align_corners=False)
    if inp.shape[0] != 1:
        raise ValueError(f"cannot warp a batch of {inp.shape[0]} by {n} flows")
    # Every output pixel samples independently, so N grids stacked along the height axis sample
    # the single input exactly as N separate calls would.
    grid = rearrange(flow, "n h w c -> 1 (n h) w c")
    out = F.grid_sample(inp, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    return rearrange(out, "1 c (n h) w -> n c h w", n=n)


def region_gaussians(shift: Tensor, covar: Tensor | float, size: tuple[int, int]) -> Tensor:
    """Unnormalised Gaussians ``exp(-0.5 d^T covar^-1 d)`` of each region on a grid.

    Args:
        shift: ``(B, K, 2)`` centres (x, y).
        covar: ``(B, K, 2, 2)`` covariances, or a scalar isotropic variance.
        size: ``(h, w)``.

    Returns:
        ``(B, K, h, w)``.
    """
    grid = make_coordinate_grid(*size, device=shift.device, dtype=shift.dtype)
    diff = grid - shift[:, :, None, None, :]  # -> (B, K, h, w, 2)
    if isinstance(covar, float):
        return torch.exp(-0.5 * (diff**2).sum(-1) / covar)
    inv = torch.inverse(covar.float()).to(diff.dtype)[:, :, None, None]  # -> (B, K, 1, 1, 2, 2)
    quad = (diff.unsqueeze(-2) @ inv @ diff.unsqueeze(-1))[..., 0, 0]
    return torch.exp(-0.5 * quad)


def heatmap_representation(
    size: tuple[int, int], driving: dict[str, Tensor], source: dict[str, Tensor]
) -> Tensor:
    """Driving minus source region Gaussians, zero background channel first (paper Eq. 6).

    Returns ``(B, K + 1, 1, h, w)``.
    """
    heat = region_gaussians(driving["shift"], driving["covar"], size) - region_gaussians(
        source["shift"], source["covar"], size
    )
    zeros = heat.new_zeros(heat.shape[0], 1, *heat.shape[2:])
    return torch.cat([zeros, heat], dim=1).unsqueeze(2)


def sparse_motions(
    size: tuple[int, int],
    driving: dict[str, Tensor],
    source: dict[str, Tensor],
    bg_params: Tensor | None = None,
    revert_axis_swap: bool = True,
) -> Tensor:
    """Per-region backward grids (driving -> source) with the background grid first.

    Region k maps a driving coordinate z to ``A_k (z - shift_drv,k) + shift_src,k`` with
    ``A_k = A_src,k inv(A_drv,k)``; with ``revert_axis_swap`` ``A_k`` is multiplied by
    ``sign(A_k[0, 0])`` (undoes a joint sign flip of both SVD axes). The background grid is
    ``bg_params @ [x, y, 1]`` de-homogenised (identity if ``bg_params`` is None).

    Args:
        size: ``(h, w)``.
        driving, source: region params with ``shift`` ``(B, K, 2)`` and ``affine`` ``(B, K, 2, 2)``.
        bg_params: ``(B, 3, 3)`` or None.

    Returns:
        ``(B, K + 1, h, w, 2)``.
    """
    src_shift, drv_shift = source["shift"], driving["shift"]
    bs = src_shift.shape[0]
    grid = make_coordinate_grid(*size, device=src_shift.device, dtype=src_shift.dtype)
    coords = grid - drv_shift[:, :, None, None, :]  # -> (B, K, h, w, 2)
    if "affine" in driving:
        # inverse in float32 (torch has no half-precision inverse), as the official code does
        inv_drv = torch.inverse(driving["affine"].float()).to(source["affine"].dtype)
        affine = source["affine"] @ inv_drv
        if revert_axis_swap:
            affine = affine * torch.sign(affine[..., :1, :1])
        coords = (affine[:, :, None, None] @ coords.unsqueeze(-1)).squeeze(-1)
    regions = coords + src_shift[:, :, None, None, :]
    bg = grid.expand(bs, 1, *grid.shape)
    if bg_params is not None:
        homo = torch.cat([bg, torch.ones_like(bg[..., :1])], dim=-1)  # -> (B, 1, h, w, 3)
        homo = (bg_params[:, None, None, None] @ homo.unsqueeze(-1)).squeeze(-1)
        bg = homo[..., :2] / homo[..., 2:3]
    return torch.cat([bg, regions], dim=1)


def deform_by_motions(image: Tensor, motions: Tensor) -> Tensor:
    """Warp ``image (B, C, h, w)`` by each of ``motions (B, M, h, w, 2)`` -> ``(B, M, C, h, w)``."""
    bs, m = motions.shape[:2]
    repeated = image.unsqueeze(1).expand(bs, m, *image.shape[1:])
    out = F.grid_sample(
        rearrange(repeated, "b m c h w -> (b m) c h w"),
        rearrange(motions, "b m h w c -> (b m) h w c"),
        mode="bilinear",
        padding_mode="zeros",
        align_corners=False,
    )
    return rearrange(out, "(b m) c h w -> b m c h w", b=bs)
