"""FaceBoxes face detector (Zhang et al., IJCB 2017) as used by 3DDFA_V2 and DAWN.

DAWN finds the portrait's face with FaceBoxes before running 3DDFA (dawn_spec.md §1.1 step 2). This
module holds the network (loads ``FaceBoxesProd.pth`` with ``strict=True``) and the pure tensor
functions around it: anchor ("prior") boxes, box decoding and a vectorised greedy NMS, so no Cython
extension is needed. Image resizing, thresholds and the choice of face live in ``face/analysis.py``.

Network input: ``(B, 3, H, W)`` BGR float minus the mean (104, 117, 123), any H, W.
Outputs: box offsets ``(B, P, 4)`` and face probability ``(B, P)`` for the ``P`` priors of
``prior_boxes(H, W)``.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

MIN_SIZES: tuple[tuple[int, ...], ...] = ((32, 64, 128), (256,), (512,))  # anchor sides per level
STEPS: tuple[int, ...] = (32, 64, 128)  # feature stride of each detection level in pixels
VARIANCE: tuple[float, float] = (0.1, 0.2)  # SSD box-encoding variances (centre, size)
BGR_MEAN: tuple[float, float, float] = (104.0, 117.0, 123.0)  # subtracted from the BGR input
# anchors per cell on level 0: 32-px anchors are densified 4x4, 64-px 2x2, 128-px once
_DENSITY = {32: 4, 64: 2}


class ConvBN(nn.Module):
    """Conv (no bias) + BatchNorm; ``crelu`` concatenates (x, -x) before the ReLU (doubles channels)."""

    def __init__(self, cin: int, cout: int, kernel: int, stride: int = 1, crelu: bool = False):
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, kernel, stride=stride, padding=kernel // 2, bias=False)
        self.bn = nn.BatchNorm2d(cout)
        self.crelu = crelu

    def forward(self, x: Tensor) -> Tensor:
        x = self.bn(self.conv(x))
        if self.crelu:
            x = torch.cat([x, -x], dim=1)
        return F.relu(x)


class Inception(nn.Module):
    """128 -> 128 channels: four 32-channel branches (1x1, pool+1x1, 3x3, double 3x3)."""

    def __init__(self) -> None:
        super().__init__()
        self.branch1x1 = ConvBN(128, 32, 1)
        self.branch1x1_2 = ConvBN(128, 32, 1)
        self.branch3x3_reduce = ConvBN(128, 24, 1)
        self.branch3x3 = ConvBN(24, 32, 3)
        self.branch3x3_reduce_2 = ConvBN(128, 24, 1)
        self.branch3x3_2 = ConvBN(24, 32, 3)
        self.branch3x3_3 = ConvBN(32, 32, 3)

    def forward(self, x: Tensor) -> Tensor:
        pooled = F.avg_pool2d(x, 3, stride=1, padding=1)
        return torch.cat(
            [
                self.branch1x1(x),
                self.branch1x1_2(pooled),
                self.branch3x3(self.branch3x3_reduce(x)),
                self.branch3x3_3(self.branch3x3_2(self.branch3x3_reduce_2(x))),
            ],
            dim=1,
        )


class FaceBoxes(nn.Module):
    """FaceBoxes: RDCL (conv1, conv2) + MSCL (3 inceptions, conv3, conv4) + multibox heads."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = ConvBN(3, 24, 7, stride=4, crelu=True)
        self.conv2 = ConvBN(48, 64, 5, stride=2, crelu=True)
        self.inception1 = Inception()
        self.inception2 = Inception()
        self.inception3 = Inception()
        self.conv3_1 = ConvBN(128, 128, 1)
        self.conv3_2 = ConvBN(128, 256, 3, stride=2)
        self.conv4_1 = ConvBN(256, 128, 1)
        self.conv4_2 = ConvBN(128, 256, 3, stride=2)
        anchors = [sum(_DENSITY.get(s, 1) ** 2 for s in sizes) for sizes in MIN_SIZES]  # 21, 1, 1
        in_channels = (128, 256, 256)
        self.loc = nn.ModuleList(
            nn.Conv2d(c, a * 4, 3, padding=1) for c, a in zip(in_channels, anchors)
        )
        self.conf = nn.ModuleList(
            nn.Conv2d(c, a * 2, 3, padding=1) for c, a in zip(in_channels, anchors)
        )

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """x: (B, 3, H, W) mean-subtracted BGR -> (loc (B, P, 4), face probability (B, P))."""
        x = F.max_pool2d(self.conv1(x), 3, stride=2, padding=1)
        x = F.max_pool2d(self.conv2(x), 3, stride=2, padding=1)
        x = self.inception3(self.inception2(self.inception1(x)))
        level1 = x  # stride 32
        x = self.conv3_2(self.conv3_1(x))
        level2 = x  # stride 64
        level3 = self.conv4_2(self.conv4_1(x))  # stride 128
        locs, confs = [], []
        for feat, loc_head, conf_head in zip((level1, level2, level3), self.loc, self.conf):
            # channels-last flattening matches the (cell row, cell col, anchor) prior order
            locs.append(loc_head(feat).permute(0, 2, 3, 1).reshape(x.shape[0], -1, 4))
            confs.append(conf_head(feat).permute(0, 2, 3, 1).reshape(x.shape[0], -1, 2))
        scores = torch.cat(confs, dim=1).softmax(dim=-1)[..., 1]
        return torch.cat(locs, dim=1), scores


def prior_boxes(height: int, width: int) -> Tensor:
    """Anchor boxes (P, 4) as (cx, cy, w, h) normalised by the image size.

    Order: level, cell row, cell col, anchor size, then the dense sub-grid (row-major), which is
    the order of the heads' flattened outputs.
    """
    out = []
    for sizes, step in zip(MIN_SIZES, STEPS):
        rows, cols = math.ceil(height / step), math.ceil(width / step)
        per_cell = []
        for size in sizes:
            n = _DENSITY.get(size, 1)
            # sub-grid offsets: k/n of a cell for the dense anchors, a half cell otherwise
            offs = torch.arange(n, dtype=torch.float64) / n if n > 1 else torch.tensor([0.5])
            oy, ox = torch.meshgrid(offs, offs, indexing="ij")
            cy = torch.arange(rows, dtype=torch.float64)[:, None, None] + oy.reshape(1, 1, -1)
            cx = torch.arange(cols, dtype=torch.float64)[:, None, None] + ox.reshape(1, 1, -1)
            cy, cx = torch.broadcast_tensors(cy[:, None], cx[None])  # (rows, cols, 1, n*n)
            cy = cy.squeeze(2) * step / height
            cx = cx.squeeze(2) * step / width
            wh = torch.tensor([size / width, size / height], dtype=torch.float64)
            anchors = torch.stack(
                [cx, cy, *wh[:, None, None, None].expand(2, rows, cols, n * n)], -1
            )
            per_cell.append(anchors)  # (rows, cols, n*n, 4)
        out.append(torch.cat(per_cell, dim=2).reshape(-1, 4))
    return torch.cat(out).float()


def decode_boxes(loc: Tensor, priors: Tensor) -> Tensor:
    """SSD decoding: loc (P, 4), priors (P, 4) (cx, cy, w, h) -> boxes (P, 4) (x0, y0, x1, y1), normalised."""
    centre = priors[:, :2] + loc[:, :2] * VARIANCE[0] * priors[:, 2:]
    size = priors[:, 2:] * torch.exp(loc[:, 2:] * VARIANCE[1])
    return torch.cat([centre - size / 2, centre + size / 2], dim=1)


def nms(boxes: Tensor, scores: Tensor, iou_threshold: float) -> Tensor:
    """Greedy non-maximum suppression; returns kept indices (K,) by decreasing score.

    Same rule as the Cython ``cpu_nms`` of FaceBoxes: pixel-inclusive areas (``x1 - x0 + 1``) and a
    box is dropped when its IoU with a kept box is ``>= iou_threshold``. The pairwise IoU matrix is
    computed once; the greedy pass is a short loop over the (few hundred) candidates.
    """
    order = scores.argsort(descending=True)
    b = boxes[order].double()
    area = (b[:, 2] - b[:, 0] + 1) * (b[:, 3] - b[:, 1] + 1)
    lt = torch.maximum(b[:, None, :2], b[None, :, :2])
    rb = torch.minimum(b[:, None, 2:], b[None, :, 2:])
    inter = (rb - lt + 1).clamp_min(0).prod(-1)
    iou = inter / (area[:, None] + area[None, :] - inter)
    suppressed = torch.zeros(len(b), dtype=torch.bool)
    keep = []
    for i in range(len(b)):
        if suppressed[i]:
            continue
        keep.append(i)
        suppressed |= iou[i] >= iou_threshold
    return order[torch.tensor(keep, dtype=torch.long)]
