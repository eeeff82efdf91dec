"""Training losses: the LFG's (dawn_spec.md §5.1; MRAA's ``ReconstructionModel``) and the mouth mask.

* ``ImagePyramid``: the frame at scales [1, 0.5, 0.25, 0.125] (anti-aliased downsampling).
* ``VGG19Features``: relu1_1 ... relu5_1 of an ImageNet VGG19, built here (no torchvision) with the
  torchvision layout ``features.<i>.{weight,bias}``, so a user's ``vgg19`` state dict loads strictly.
* ``pyramid_loss``: the reconstruction term: L1 between prediction and target at every scale, on
  VGG features when a ``VGG19Features`` is given (the official perceptual loss), else on pixels.
* ``RandomAffine`` + ``equivariance_losses``: the equivariance terms of the region predictor. The
  official transform is affine (sigma 0.05) plus a thin-plate spline (sigma 0.005, 5x5 control
  points); this implementation uses the affine part only (its TPS part is a small perturbation,
  and with an affine transform the Jacobian is exact and constant).
* ``mouth_mask``: mouth boxes as a {0, 1} mask at any size, for the lip-region terms (the A2V-FDM
  mouth loss, and the LFG's optional one).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from talkinghead.dawn.models.blocks2d import AntiAliasInterpolation2d
from talkinghead.dawn.models.warp import make_coordinate_grid

PYRAMID_SCALES = (1.0, 0.5, 0.25, 0.125)
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
# torchvision vgg19 "E" configuration up to relu5_1 (index 29); "M" = max-pool
_VGG19 = (64, 64, "M", 128, 128, "M", 256, 256, 256, 256, "M", 512, 512, 512, 512, "M", 512)
_VGG_TAPS = (1, 6, 11, 20, 29)  # indices of relu1_1, relu2_1, relu3_1, relu4_1, relu5_1


class ImagePyramid(nn.Module):
    """``x: (B, C, H, W)`` -> ``[x at each scale]`` (official ``ImagePyramide``)."""

    def __init__(self, channels: int = 3, scales: tuple[float, ...] = PYRAMID_SCALES) -> None:
        super().__init__()
        self.scales = scales
        self.downs = nn.ModuleList(AntiAliasInterpolation2d(channels, s) for s in scales)

    def forward(self, x: Tensor) -> list[Tensor]:
        return [down(x) for down in self.downs]


class VGG19Features(nn.Module):
    """Frozen VGG19 slices; ``x: (B, 3, H, W)`` in [0, 1] -> 5 feature maps (ImageNet-normalised)."""

    def __init__(self) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        width = 3
        for v in _VGG19:
            if v == "M":
                layers.append(nn.MaxPool2d(2, 2))
            else:
                layers += [nn.Conv2d(width, int(v), 3, padding=1), nn.ReLU(inplace=False)]
                width = int(v)
        self.features = nn.Sequential(*layers[: _VGG_TAPS[-1] + 1])
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1), persistent=False)
        self.requires_grad_(False).eval()

    @classmethod
    def from_torchvision_state_dict(cls, state_dict: dict[str, Tensor]) -> VGG19Features:
        """Load the ``features.*`` tensors of a torchvision ``vgg19`` state dict (strict on them)."""
        vgg = cls()
        wanted = set(vgg.features.state_dict())
        # layers past relu5_1 and the classifier are not needed
        sd = {k[len("features.") :]: v for k, v in state_dict.items() if k.startswith("features.")}
        sd = {k: v for k, v in sd.items() if k in wanted}
        missing = sorted(wanted - set(sd))
        if missing:
            raise ValueError(
                f"not a torchvision vgg19 state dict: missing features.{missing[0]} ..."
            )
        vgg.features.load_state_dict(sd, strict=True)
        return vgg.requires_grad_(False).eval()

    def forward(self, x: Tensor) -> list[Tensor]:
        out, h = [], (x - self.mean.to(x.dtype)) / self.std.to(x.dtype)
        for i, layer in enumerate(self.features):
            h = layer(h)
            if i in _VGG_TAPS:
                out.append(h)
        return out

    def train(self, mode: bool = True) -> VGG19Features:
        return super().train(False)  # always frozen


def pyramid_loss(
    prediction: Tensor, target: Tensor, pyramid: ImagePyramid, vgg: VGG19Features | None = None
) -> Tensor:
    """Sum over scales (and VGG layers) of mean |pred - target|; inputs ``(B, 3, H, W)`` in [0, 1]."""
    total = prediction.new_zeros(())
    for p, t in zip(pyramid(prediction), pyramid(target), strict=True):
        if vgg is None:
            total = total + (p - t).abs().mean()
            continue
        with torch.no_grad():
            t_feats = vgg(t)
        for pf, tf in zip(vgg(p), t_feats, strict=True):
            total = total + (pf - tf).abs().mean()
    return total


class RandomAffine:
    """A random affine map of normalised (x, y) coordinates: ``T(p) = A p + b``.

    ``A = I + N(0, sigma)``, ``b = N(0, sigma)`` per batch item, drawn from ``generator``.
    """

    def __init__(
        self,
        batch: int,
        sigma: float,
        *,
        generator: torch.Generator | None,
        device: torch.device,
        dtype: torch.dtype = torch.float32,
    ) -> None:
        noise = torch.randn((batch, 2, 3), generator=generator, device=device) * sigma
        theta = noise + torch.eye(2, 3, device=device)
        self.theta = theta.to(dtype)  # (B, 2, 3)

    @property
    def jacobian(self) -> Tensor:
        """dT/dp, (B, 1, 2, 2): constant for an affine map."""
        return self.theta[:, None, :, :2]

    def warp_coordinates(self, coords: Tensor) -> Tensor:
        """``coords: (B, K, 2)`` -> ``T(coords)`` of the same shape."""
        a, b = self.theta[:, :, :2], self.theta[:, :, 2]
        return torch.einsum("bij,bkj->bki", a, coords) + b[:, None]

    def transform_frame(self, frame: Tensor) -> Tensor:
        """The frame resampled at ``T(grid)``: a point ``q`` of the result shows ``frame`` at ``T(q)``."""
        b, _, h, w = frame.shape
        grid = make_coordinate_grid(h, w, device=frame.device, dtype=frame.dtype)
        warped = self.warp_coordinates(grid.reshape(1, h * w, 2).expand(b, -1, -1))
        grid = warped.reshape(b, h, w, 2)
        return F.grid_sample(frame, grid, padding_mode="reflection", align_corners=True)


def equivariance_losses(
    driving_params: dict[str, Tensor],
    transformed_params: dict[str, Tensor],
    transform: RandomAffine,
) -> tuple[Tensor, Tensor]:
    """Shift and affine equivariance of region parameters under ``transform``.

    ``shift``: mean |shift_drv - T(shift_transformed)|. ``affine``: mean |I - inv(A_drv) J_T A_tr|,
    with the columns of the product flipped to a positive diagonal first: the SVD fixes ``U`` only
    up to the sign of its columns, which the flow predictor removes too (``revert_axis_swap``).
    Region params: ``shift (B, K, 2)``, ``affine (B, K, 2, 2)``.
    """
    shift = driving_params["shift"] - transform.warp_coordinates(transformed_params["shift"])
    affine_tr = transform.jacobian @ transformed_params["affine"].float()
    value = torch.linalg.inv(driving_params["affine"].float()) @ affine_tr  # -> (B, K, 2, 2)
    sign = torch.sign(torch.diagonal(value, dim1=-2, dim2=-1)).detach()
    sign = torch.where(sign == 0, torch.ones_like(sign), sign)
    value = value * sign[..., None, :]
    eye = torch.eye(2, device=value.device, dtype=value.dtype)
    return shift.abs().mean(), (eye - value).abs().mean()


def region_separation(shift: Tensor, sigma: float) -> Tensor:
    """Mean over region pairs of ``exp(-|s_k - s_l|^2 / (2 sigma^2))``: ``shift (B, K, 2)`` -> ().

    The separation prior of unsupervised landmark discovery (Zhang et al., CVPR 2018): it is 1 for
    regions on top of each other and vanishes beyond a few ``sigma``, so it breaks up regions that
    collapsed onto one spot without pulling apart regions that already found their own parts.
    """
    k = shift.shape[1]
    dist2 = (shift.unsqueeze(2) - shift.unsqueeze(1)).pow(2).sum(-1)  # -> (B, K, K)
    pairs = torch.triu(torch.ones(k, k, dtype=torch.bool, device=shift.device), diagonal=1)
    return torch.exp(-dist2[:, pairs] / (2 * sigma**2)).mean()


def region_box_loss(shift: Tensor, covar: Tensor, box: Tensor, image_size: int) -> Tensor:
    """L1 between one region's centre and spread and those of a box: () loss.

    Args:
        shift: (B, 2) region centre, covar: (B, 2, 2) its covariance ([-1, 1] coordinates).
        box: (B, 4) [x0, y0, x1, y1] pixels of an ``image_size`` frame. Its spread is the standard
            deviation of a uniform distribution over the box (half-side / sqrt(3)), so the
            region's covariance grows with the box: a mouth box grows as the mouth opens.
    """
    lo, hi = box[:, :2], box[:, 2:]
    centre = (lo + hi) / image_size - 1.0
    spread = (hi - lo) / image_size / 3**0.5
    sd = torch.diagonal(covar, dim1=-2, dim2=-1).clamp_min(0).sqrt()
    return (shift - centre).abs().mean() + (sd - spread).abs().mean()


def mouth_mask(mouth_box: Tensor, image_size: int, latent_size: int) -> Tensor:
    """Mouth boxes ``(B, F, 4)`` [x0, y0, x1, y1] px -> ``(B, 1, F, h, w)`` {0, 1} at latent size."""
    scale = latent_size / image_size
    lo = torch.floor(mouth_box[..., :2] * scale)  # (x0, y0)
    hi = torch.ceil(mouth_box[..., 2:] * scale)  # (x1, y1), exclusive
    idx = torch.arange(latent_size, device=mouth_box.device, dtype=mouth_box.dtype)
    cols = (idx >= lo[..., 0:1]) & (idx < hi[..., 0:1])  # -> (B, F, w)
    rows = (idx >= lo[..., 1:2]) & (idx < hi[..., 1:2])  # -> (B, F, h)
    return (rows[..., :, None] & cols[..., None, :]).unsqueeze(1).to(mouth_box.dtype)
