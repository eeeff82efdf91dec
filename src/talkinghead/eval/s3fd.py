"""S3FD face detector (Zhang et al., ICCV 2017) as syncnet_python runs it before SyncNet.

syncnet_python (joonson/syncnet_python, ``run_pipeline.py``) finds the face of every 25 fps frame
with S3FD before tracking and cropping it for SyncNet (``face_track.py``). The network here loads
its ``sfd_face.pth`` strictly under the official key names (``vgg.0.weight``,
``L2Norm3_3.weight``, ``extras.1.bias``, ``loc.5.weight``, ``conf.0.weight``, ...).

Facts of the official code that ``detect_faces`` reproduces:

* network: VGG16 (the third pool with ``ceil_mode``; fc6 as a dilation-6 conv, fc7 1x1), two
  extra stride-2 stages, L2-normalised conv3_3 / conv4_3 / conv5_3 (scales 10, 8, 5); six heads
  of one anchor per cell (sides 16 ... 512 px at strides 4 ... 128); the first head's background
  is the max over three "max-out" channels;
* input: the RGB frame resized by ``scale`` (bilinear) minus the mean (123, 117, 104) per R, G, B
  channel (the official code swaps to BGR, subtracts (104, 117, 123) and swaps back);
* decoding: SSD offsets with variances (0.1, 0.2), candidates with face probability > 0.05,
  NMS at IoU 0.3 over the best 5000, at most 750 kept; boxes scale back to the full frame;
* the caller's confidence threshold (syncnet_python: 0.9, frames at scale 0.25), then a final
  NMS at IoU 0.1. Both NMS passes drop a box whose IoU with a kept one is above the threshold
  and use areas without the +1 pixel of FaceBoxes' NMS (``models/faceboxes.nms``).
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from talkinghead.eval.loading import load_official_state_dict
from talkinghead.face.faceboxes import decode_boxes

S3FD_WEIGHTS_NAME = "sfd_face.pth"
S3FD_WEIGHTS_URL = "https://www.robots.ox.ac.uk/~vgg/software/lipsync/data/sfd_face.pth"
RGB_MEAN = (123.0, 117.0, 104.0)  # subtracted from the R, G, B input channels
MIN_SIZES = (16, 32, 64, 128, 256, 512)  # anchor side per head, pixels
STEPS = (4, 8, 16, 32, 64, 128)  # feature stride per head, pixels
CANDIDATE_THRESHOLD, CANDIDATE_NMS, CANDIDATE_TOP_K, KEEP_TOP_K = 0.05, 0.3, 5000, 750
FINAL_NMS = 0.1  # IoU threshold of the last NMS over the confident boxes
MIN_INPUT_SIDE = 32  # the fifth pooling needs a 2x2 map: smaller inputs have no detections

# VGG16 layer list: conv (cin, cout) entries and "M" / "C" (ceil-mode) 2x2 max-pools; every conv
# is followed by a ReLU, so the ModuleList indices match the official ``vgg.<i>`` keys.
_VGG = (
    (3, 64), (64, 64), "M", (64, 128), (128, 128), "M",
    (128, 256), (256, 256), (256, 256), "C",
    (256, 512), (512, 512), (512, 512), "M",
    (512, 512), (512, 512), (512, 512), "M",
)  # fmt: skip
# vgg indices after which a detection source is taken: conv3_3, conv4_3, conv5_3 ReLUs
_SOURCES = (15, 22, 29)


class L2Norm(nn.Module):
    """Channel-wise L2 normalisation with a learned per-channel scale (initialised to ``scale``)."""

    def __init__(self, channels: int, scale: float) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.full((channels,), float(scale)))

    def forward(self, x: Tensor) -> Tensor:
        norm = x.pow(2).sum(dim=1, keepdim=True).sqrt() + 1e-10
        return self.weight[None, :, None, None] * x / norm


def _vgg() -> nn.ModuleList:
    layers: list[nn.Module] = []
    for item in _VGG:
        if item in ("M", "C"):
            layers.append(nn.MaxPool2d(2, 2, ceil_mode=item == "C"))
        else:
            layers += [nn.Conv2d(*item, 3, padding=1), nn.ReLU(inplace=True)]  # type: ignore[misc]
    layers += [
        nn.Conv2d(512, 1024, 3, padding=6, dilation=6),  # fc6
        nn.ReLU(inplace=True),
        nn.Conv2d(1024, 1024, 1),  # fc7
        nn.ReLU(inplace=True),
    ]
    return nn.ModuleList(layers)


class S3FD(nn.Module):
    """images (B, 3, H, W) RGB minus ``RGB_MEAN`` -> box offsets (B, P, 4), face prob (B, P).

    ``forward`` also returns the (h, w) of the six detection maps: the priors follow from them
    (``s3fd_priors``), in the order of the flattened outputs (head, row, column).
    """

    def __init__(self) -> None:
        super().__init__()
        self.vgg = _vgg()
        self.L2Norm3_3 = L2Norm(256, 10)
        self.L2Norm4_3 = L2Norm(512, 8)
        self.L2Norm5_3 = L2Norm(512, 5)
        self.extras = nn.ModuleList(
            [
                nn.Conv2d(1024, 256, 1),
                nn.Conv2d(256, 512, 3, stride=2, padding=1),
                nn.Conv2d(512, 128, 1),
                nn.Conv2d(128, 256, 3, stride=2, padding=1),
            ]
        )
        source_channels = (256, 512, 512, 1024, 512, 256)
        self.loc = nn.ModuleList([nn.Conv2d(c, 4, 3, padding=1) for c in source_channels])
        # the first head predicts 3 max-out background scores + 1 face score
        self.conf = nn.ModuleList(
            [nn.Conv2d(c, 4 if i == 0 else 2, 3, padding=1) for i, c in enumerate(source_channels)]
        )

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor, list[tuple[int, int]]]:
        norms = dict(zip(_SOURCES, (self.L2Norm3_3, self.L2Norm4_3, self.L2Norm5_3)))
        sources = []
        for i, layer in enumerate(self.vgg):
            x = layer(x)
            if i in norms:
                sources.append(norms[i](x))
        sources.append(x)  # fc7
        for i, layer in enumerate(self.extras):
            x = F.relu(layer(x))
            if i % 2 == 1:
                sources.append(x)
        locs, confs = [], []
        for i, src in enumerate(sources):
            conf = self.conf[i](src)
            if i == 0:
                background = conf[:, :3].amax(dim=1, keepdim=True)
                conf = torch.cat([background, conf[:, 3:]], dim=1)
            locs.append(self.loc[i](src).permute(0, 2, 3, 1).reshape(len(x), -1, 4))
            confs.append(conf.permute(0, 2, 3, 1).reshape(len(x), -1, 2))
        scores = torch.cat(confs, dim=1).softmax(dim=-1)[..., 1]
        return torch.cat(locs, dim=1), scores, [tuple(s.shape[-2:]) for s in sources]


def s3fd_priors(height: int, width: int, feature_sizes: list[tuple[int, int]]) -> Tensor:
    """Anchors (P, 4) as (cx, cy, w, h) normalised by the input size, one per map cell.

    A cell (i, j) of head k is centred at ((j + 0.5) * step_k / W, (i + 0.5) * step_k / H), as in
    the official PriorBox (which divides by W / step, not by the map width).
    """
    out = []
    for (rows, cols), step, size in zip(feature_sizes, STEPS, MIN_SIZES):
        cy, cx = torch.meshgrid(
            (torch.arange(rows, dtype=torch.float64) + 0.5) * step / height,
            (torch.arange(cols, dtype=torch.float64) + 0.5) * step / width,
            indexing="ij",
        )
        wh = torch.tensor([size / width, size / height], dtype=torch.float64).expand(rows, cols, 2)
        out.append(torch.cat([torch.stack([cx, cy], -1), wh], -1).reshape(-1, 4))
    return torch.cat(out).float()


def nms_s3fd(boxes: np.ndarray, scores: np.ndarray, threshold: float, top_k: int | None = None):
    """Greedy NMS of S3FD: indices (K,) by decreasing score; a box whose IoU with a kept box is
    above ``threshold`` is dropped; areas are (x1 - x0) * (y1 - y0). ``top_k``: only the best
    ``top_k`` boxes take part."""
    order = np.argsort(-scores, kind="stable")[:top_k]
    b = boxes[order].astype(np.float64)
    area = (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])
    lt = np.maximum(b[:, None, :2], b[None, :, :2])
    rb = np.minimum(b[:, None, 2:], b[None, :, 2:])
    inter = np.clip(rb - lt, 0, None).prod(-1)
    iou = inter / (area[:, None] + area[None, :] - inter)
    suppressed = np.zeros(len(b), dtype=bool)
    keep = []
    for i in range(len(b)):
        if not suppressed[i]:
            keep.append(i)
            suppressed |= iou[i] > threshold
    return order[np.asarray(keep, dtype=np.int64)]


@torch.no_grad()
def detect_faces(
    model: S3FD, image_rgb: np.ndarray, conf_threshold: float = 0.9, scale: float = 0.25
) -> np.ndarray:
    """Faces (N, 5) ``[x0, y0, x1, y1, score]`` in the pixels of ``image_rgb`` (H, W, 3) uint8.

    Defaults are syncnet_python's ``run_pipeline.py`` (``conf_th=0.9``, ``--facedet_scale 0.25``).
    """
    h, w = image_rgb.shape[:2]
    small = cv2.resize(image_rgb, (0, 0), fx=scale, fy=scale, interpolation=cv2.INTER_LINEAR)
    sh, sw = small.shape[:2]
    if min(sh, sw) < MIN_INPUT_SIDE:
        return np.zeros((0, 5))
    device = next(model.parameters()).device
    x = torch.from_numpy(small.astype(np.float32) - np.asarray(RGB_MEAN, np.float32))
    loc, scores, sizes = model(x.permute(2, 0, 1)[None].to(device))
    boxes = decode_boxes(loc[0].float().cpu(), s3fd_priors(sh, sw, sizes)).numpy()
    scores = scores[0].float().cpu().numpy()
    cand = (scores > CANDIDATE_THRESHOLD) & np.isfinite(boxes).all(axis=1)
    boxes, scores = boxes[cand] * np.array([w, h, w, h]), scores[cand]
    kept = nms_s3fd(boxes, scores, CANDIDATE_NMS, CANDIDATE_TOP_K)[:KEEP_TOP_K]
    dets = np.concatenate([boxes[kept], scores[kept, None]], axis=1)
    dets = dets[dets[:, 4] > conf_threshold]
    return dets[nms_s3fd(dets[:, :4], dets[:, 4], FINAL_NMS)]


def load_s3fd(path: str | Path, device: torch.device | str = "cpu") -> S3FD:
    """Build S3FD and strictly load syncnet_python's ``sfd_face.pth`` (``weights_only=True``)."""
    model = S3FD()
    model.load_state_dict(load_official_state_dict(path, model), strict=True)
    return model.eval().to(device)
