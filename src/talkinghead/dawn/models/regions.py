"""LFG's motion regions: the region predictor (heat-maps -> centre, covariance, affine) and the background motion.

``RegionPredictor`` finds K soft regions on the anti-aliased image and summarises each as a Gaussian
(centre ``shift``, covariance ``covar``, ``affine = U diag(sqrt(S))`` via ``covariance_sqrt``);
``BackgroundMotionPredictor`` regresses one 3x3 affine motion of the whole frame. Attribute names
are the official ones (``region_predictor.*``, ``bg_predictor.*`` in ``LFG_*.pth``).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from talkinghead.dawn.configs import FlowAEConfig
from talkinghead.dawn.models.blocks2d import (
    AntiAliasInterpolation2d,
    Hourglass,
    HourglassEncoder,
    level_width,
)
from talkinghead.dawn.models.warp import make_coordinate_grid

RegionParams = dict[str, Tensor]


def covariance_sqrt(covar: Tensor, method: str = "lapack") -> tuple[Tensor, Tensor, Tensor]:
    """``affine = U diag(sqrt(S))`` of symmetric PSD 2x2 covariances.

    ``method="lapack"`` is the official computation: ``torch.svd(covar.cpu())`` (LAPACK gesdd) in
    float32, moved back to ``covar``'s device. ``method="analytic"`` is a closed-form
    eigendecomposition (float64 internally, stays on the device, no host sync). For these matrices
    gesdd returns a reflection ``U = [[p, q], [q, -p]]`` (det -1) whose only freedom is a joint
    sign flip of both columns; the analytic form picks ``p <= 0`` (gesdd's usual choice), so ``U``
    and ``affine`` may differ from gesdd's by a per-region sign, which the sparse-motion sign fix
    (``revert_axis_swap``) removes: the flow predictor's inputs agree to float precision.

    Args:
        covar: ``(..., 2, 2)``.
        method: ``"lapack"`` or ``"analytic"``.

    Returns:
        ``affine, u, d``, each ``(..., 2, 2)``; ``d = diag(sqrt(S))``, ``S`` descending.
    """
    if method == "lapack":
        u, s, _ = torch.linalg.svd(covar.float().cpu())
        u, s = u.to(covar.device, covar.dtype), s.to(covar.device, covar.dtype)
    elif method == "analytic":
        c64 = covar.double()
        a, b, c = c64[..., 0, 0], c64[..., 0, 1], c64[..., 1, 1]
        mean, radius = (a + c) / 2, torch.hypot((a - c) / 2, b)
        s = torch.stack([mean + radius, (mean - radius).clamp_min(0)], dim=-1)
        theta = 0.5 * torch.atan2(2 * b, a - c)  # principal axis angle, cos(theta) >= 0
        p, q = -torch.cos(theta), -torch.sin(theta)
        u = torch.stack([torch.stack([p, q], -1), torch.stack([q, -p], -1)], -2)
        u, s = u.to(covar.dtype), s.to(covar.dtype)
    else:
        raise ValueError(f"method={method!r} must be 'lapack' or 'analytic'")
    d = torch.diag_embed(s.sqrt())
    return u @ d, u, d


def region_scale(cfg: FlowAEConfig) -> float:
    """Resolution of the region predictor's input relative to the image."""
    return cfg.scale_factor if cfg.region_scale_factor is None else cfg.region_scale_factor


class RegionPredictor(nn.Module):
    """Region heat-maps and their affine parameters (PCA-based, official ``pca_based=True``).

    ``forward(x: (B, C, S, S))`` -> dict with ``heatmap (B, K, h, w)``, ``shift (B, K, 2)``,
    ``covar``, ``affine``, ``u``, ``d`` (each ``(B, K, 2, 2)``), ``h = S * region_scale_factor``
    (``scale_factor`` when unset). Shifts and covariances are in [-1, 1] image coordinates, so the
    flow predictor may run at another resolution.
    """

    def __init__(self, cfg: FlowAEConfig) -> None:
        super().__init__()
        self.predictor = Hourglass(
            cfg.region_block_expansion,
            cfg.num_channels,
            cfg.region_num_blocks,
            cfg.region_max_features,
        )
        self.regions = nn.Conv2d(self.predictor.out_filters, cfg.num_regions, 7, padding=3)
        self.temperature = cfg.temperature
        self.svd = cfg.svd
        scale = region_scale(cfg)
        if scale != 1:
            self.down = AntiAliasInterpolation2d(cfg.num_channels, scale)

    def downsample(self, x: Tensor) -> Tensor:
        """Anti-aliased ``region_scale(cfg)`` image ``(B, C, h, w)`` the hourglass sees."""
        return self.down(x) if hasattr(self, "down") else x

    def forward(self, x: Tensor) -> RegionParams:
        logits = self.regions(self.predictor(self.downsample(x)))  # -> (B, K, h, w)
        b, k, h, w = logits.shape
        heatmap = F.softmax(logits.view(b, k, h * w) / self.temperature, dim=2).view(b, k, h, w)
        grid = make_coordinate_grid(h, w, device=x.device, dtype=heatmap.dtype)
        weights = heatmap.unsqueeze(-1)  # -> (B, K, h, w, 1)
        shift = (weights * grid).sum(dim=(2, 3))  # -> (B, K, 2)
        centred = grid - shift[:, :, None, None, :]  # -> (B, K, h, w, 2)
        outer = centred.unsqueeze(-1) @ centred.unsqueeze(-2)  # -> (B, K, h, w, 2, 2)
        covar = (outer * weights.unsqueeze(-1)).sum(dim=(2, 3))
        affine, u, d = covariance_sqrt(covar, self.svd)
        return {
            "heatmap": heatmap,
            "shift": shift,
            "covar": covar,
            "affine": affine,
            "u": u,
            "d": d,
        }


class BackgroundMotionPredictor(nn.Module):
    """Affine background motion from ``cat(source, driving)``: ``(B, C, S, S) x 2 -> (B, 3, 3)``."""

    def __init__(self, cfg: FlowAEConfig) -> None:
        super().__init__()
        self.encoder = HourglassEncoder(
            cfg.bg_block_expansion, 2 * cfg.num_channels, cfg.bg_num_blocks, cfg.bg_max_features
        )
        width = level_width(cfg.bg_block_expansion, cfg.bg_max_features, cfg.bg_num_blocks)
        self.fc = nn.Linear(width, 6)
        # Start at the identity motion (the official initialisation).
        nn.init.zeros_(self.fc.weight)
        with torch.no_grad():
            self.fc.bias.copy_(torch.tensor([1.0, 0.0, 0.0, 0.0, 1.0, 0.0]))

    def forward(self, source: Tensor, driving: Tensor) -> Tensor:
        feat = self.encoder(torch.cat([source, driving], dim=1))[-1].mean(dim=(2, 3))
        top = self.fc(feat).view(-1, 2, 3)
        bottom = top.new_tensor([0.0, 0.0, 1.0]).expand(top.shape[0], 1, 3)
        return torch.cat([top, bottom], dim=1)
