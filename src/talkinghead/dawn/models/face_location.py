"""Face-location embedding of A2V-FDM: a binary face box -> 16 frame-invariant UNet input channels.

dawn_spec.md §1.4 step 6, §3.5, §7 items 2, 5, 18. The official ``generate_bbox_mask`` draws the
face box of frame 0 as a filled rectangle at the image resolution and ``Face_loc_Encoder`` (two
stride-2 3x3 convolutions with ReLU) maps it to (B, 16, S/4, S/4). The encoder was never trained
nor saved (a fixed random projection, seed-dependent); its weights must be supplied.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from talkinghead.dawn.configs import FaceLocConfig


class FaceLocationEncoder(nn.Module):
    """Conv2d(1 -> hidden, 3, s2, p1) -> ReLU -> Conv2d(hidden -> out, 3, s2, p1) -> ReLU.

    mask: (B, 1, S, S) -> (B, out_channels, S/4, S/4). Keys ``conv1.*``, ``conv2.*`` as official.
    """

    def __init__(self, cfg: FaceLocConfig | None = None) -> None:
        super().__init__()
        self.cfg = cfg = cfg or FaceLocConfig()
        hidden, out = cfg.hidden_channels, cfg.out_channels
        self.conv1 = nn.Conv2d(1, hidden, kernel_size=3, stride=2, padding=1)
        self.conv2 = nn.Conv2d(hidden, out, kernel_size=3, stride=2, padding=1)

    def forward(self, mask: Tensor) -> Tensor:
        if mask.dim() != 4 or mask.shape[1] != 1:
            raise ValueError(f"mask must be (B, 1, S, S), got {tuple(mask.shape)}")
        return F.relu(self.conv2(F.relu(self.conv1(mask))))


def bbox_mask(bbox: Tensor, size: int, *, faithful: bool = False) -> Tensor:
    """Filled face rectangle at ``size`` x ``size``: 1 inside (bounds inclusive), 0 outside.

    Args:
        bbox: (B, 6) ``[x_min, x_max, y_min, y_max, H, W]`` in pixels of an H x W image, or the
            official (B, 6, F) layout, of which frame 0 is used. Not modified.
        size: output side S.
        faithful: reproduce the official axis mix-up (x divided by H, y by W); only matters for
            non-square images. The default divides x by W and y by H.
    Returns:
        (B, 1, S, S) float mask, rows = y, columns = x. Corners are truncated toward zero after
        scaling, the far corner gets +1 first (both as official).
    """
    if bbox.dim() == 3:
        bbox = bbox[:, :, 0]
    if bbox.dim() != 2 or bbox.shape[1] != 6:
        raise ValueError(f"bbox must be (B, 6) or (B, 6, F), got {tuple(bbox.shape)}")
    h, w = bbox[:, 4:5], bbox[:, 5:6]
    x_div, y_div = (h, w) if faithful else (w, h)
    xs = bbox[:, 0:2] / x_div * size  # new tensors: the caller's bbox stays untouched
    ys = bbox[:, 2:4] / y_div * size
    x0, x1 = xs[:, 0].to(torch.int32), (xs[:, 1] + 1).to(torch.int32)
    y0, y1 = ys[:, 0].to(torch.int32), (ys[:, 1] + 1).to(torch.int32)
    idx = torch.arange(size, device=bbox.device)
    rows = (idx[None, :] >= y0[:, None]) & (idx[None, :] <= y1[:, None])  # (B, S)
    cols = (idx[None, :] >= x0[:, None]) & (idx[None, :] <= x1[:, None])
    return (rows[:, :, None] & cols[:, None, :]).unsqueeze(1).to(bbox.dtype)
