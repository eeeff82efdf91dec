"""SyncNet's input as syncnet_python prepares it: a face track of the 25 fps clip, cropped to 224 px.

Facts of joonson/syncnet_python ``run_pipeline.py`` reproduced here (S3FD itself: ``s3fd.py``):

* tracking (``track_shot``): detections of consecutive frames are chained while the IoU with the
  track's last box is above 0.5 and at most ``NUM_FAILED_DET`` (25) frames were missed; a track
  is kept when it has more than ``MIN_TRACK`` (100) detections and its interpolated boxes are on
  average larger than ``MIN_FACE_SIZE`` (100) px (the larger of mean width and mean height);
  frames between detections get linearly interpolated boxes;
* cropping (``crop_video``): per frame the half side ``s = max(w, h) / 2`` and the centre of the
  box, each median filtered over 13 frames (``scipy.signal.medfilt``, zero-padded ends, as
  there); the frame is padded by ``int(s * (1 + 2 * 0.4))`` pixels of value 110 and the window
  rows ``cy - s .. cy + s * 1.8``, columns ``cx - s * 1.4 .. cx + s * 1.4`` (crop scale 0.4) is
  resized to 224 x 224 (bilinear) -- a square from the brows down, widened past the cheeks.

Where we differ, and say so in the report: frames are resampled to 25 fps by nearest frame (not
ffmpeg ``-r 25``) and never JPEG/XVID re-encoded; there is no scene-cut detection (a generated
clip is one shot); a clip shorter than ``MIN_TRACK`` + 1 frames needs a track with a detection
in every frame (syncnet_python drops such clips); of several tracks the longest is scored
(syncnet_python scores each).
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np
from scipy.signal import medfilt

TRACK_IOU = 0.5  # minimum IoU between a detection and the track's last box
NUM_FAILED_DET = 25  # frames without a matching detection before a track ends
MIN_TRACK = 100  # a track needs more detections than this (frames at 25 fps)
MIN_FACE_SIZE = 100  # pixels: mean box side a track needs
CROP_SCALE = 0.4  # syncnet_python --crop_scale
SMOOTH_KERNEL = 13  # median filter length over the box centre and size, frames
PAD_VALUE = 110  # grey of the padding around the frame
CROP_SIZE = 224  # SyncNet input side, pixels


@dataclass(frozen=True)
class FaceTrack:
    """A face followed over frames.

    Attributes:
        frames: (N,) int consecutive frame indices ``first .. last``.
        boxes: (N, 4) float ``[x0, y0, x1, y1]`` per frame (interpolated between detections).
        num_detections: detections the track was built from.
    """

    frames: np.ndarray
    boxes: np.ndarray
    num_detections: int


def box_iou(a: np.ndarray, b: np.ndarray) -> float:
    """IoU of two ``[x0, y0, x1, y1, ...]`` boxes (areas without a +1 pixel)."""
    iw = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    ih = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = iw * ih
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return float(inter / union) if union > 0 else 0.0


def _interpolated(frames: list[int], boxes: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    span = np.arange(frames[0], frames[-1] + 1)
    stacked = np.asarray(boxes, dtype=np.float64)[:, :4]
    return span, np.stack([np.interp(span, frames, stacked[:, k]) for k in range(4)], axis=1)


def build_tracks(
    detections: list[np.ndarray],
    *,
    min_track: int = MIN_TRACK,
    min_face_size: float = MIN_FACE_SIZE,
    iou_threshold: float = TRACK_IOU,
    num_failed_det: int = NUM_FAILED_DET,
) -> list[FaceTrack]:
    """Face tracks from per-frame detections, as syncnet_python's ``track_shot``.

    Each pass starts a track at the earliest unused detection and walks forward, taking in each
    frame the first unused detection that overlaps the track's last box by more than
    ``iou_threshold``, until more than ``num_failed_det`` frames pass without one.

    Args:
        detections: per frame, (K_t, >= 4) boxes ``[x0, y0, x1, y1, ...]`` (K_t may be 0).
    Returns:
        the kept tracks (more than ``min_track`` detections, mean side > ``min_face_size``).
    """
    unused = [list(range(len(d))) for d in detections]
    tracks = []
    while True:
        frames: list[int] = []
        boxes: list[np.ndarray] = []
        for t, dets in enumerate(detections):
            if frames and t - frames[-1] > num_failed_det:
                break
            for k in unused[t]:
                if not frames or box_iou(dets[k], boxes[-1]) > iou_threshold:
                    frames.append(t)
                    boxes.append(np.asarray(dets[k], dtype=np.float64))
                    unused[t].remove(k)
                    break
        if not frames:
            return tracks
        if len(frames) <= min_track:
            continue
        span, interp = _interpolated(frames, boxes)
        size = max(np.mean(interp[:, 2] - interp[:, 0]), np.mean(interp[:, 3] - interp[:, 1]))
        if size > min_face_size:
            tracks.append(FaceTrack(span, interp, len(frames)))


def smoothed_crop_params(boxes: np.ndarray) -> np.ndarray:
    """(N, 4) boxes -> (N, 3) ``[centre x, centre y, half side]``, each median filtered over
    ``SMOOTH_KERNEL`` frames with zero-padded ends (``scipy.signal.medfilt``, as syncnet_python)."""
    b = np.asarray(boxes, dtype=np.float64)
    half = np.maximum(b[:, 3] - b[:, 1], b[:, 2] - b[:, 0]) / 2
    cx, cy = (b[:, 0] + b[:, 2]) / 2, (b[:, 1] + b[:, 3]) / 2
    return np.stack([medfilt(v, SMOOTH_KERNEL) for v in (cx, cy, half)], axis=1)


def crop_window(cx: float, cy: float, half: float, crop_scale: float = CROP_SCALE):
    """The crop of one frame as syncnet_python cuts it: (pad, rows, cols).

    ``pad`` pixels of ``PAD_VALUE`` are added on every side; then rows ``r0:r1`` and columns
    ``c0:c1`` of the padded frame are taken (``int`` truncation as there).
    """
    pad = int(half * (1 + 2 * crop_scale))
    my, mx = cy + pad, cx + pad
    rows = (int(my - half), int(my + half * (1 + 2 * crop_scale)))
    cols = (int(mx - half * (1 + crop_scale)), int(mx + half * (1 + crop_scale)))
    return pad, rows, cols


def crop_track(
    frames: np.ndarray, boxes: np.ndarray, size: int = CROP_SIZE, crop_scale: float = CROP_SCALE
) -> np.ndarray:
    """SyncNet crops (N, size, size, 3) uint8 of frames (N, H, W, 3) along a track's boxes (N, 4).

    Channel order is kept (syncnet_python crops BGR frames; the caller converts).
    """
    params = smoothed_crop_params(boxes)
    out = np.empty((len(frames), size, size, 3), dtype=np.uint8)
    for i, (frame, (cx, cy, half)) in enumerate(zip(frames, params)):
        pad, (r0, r1), (c0, c1) = crop_window(cx, cy, half, crop_scale)
        padded = cv2.copyMakeBorder(
            frame, pad, pad, pad, pad, cv2.BORDER_CONSTANT, value=(PAD_VALUE,) * 3
        )
        # the padding keeps the window inside the padded frame for any centre inside the frame
        face = padded[max(r0, 0) : r1, max(c0, 0) : c1]
        out[i] = cv2.resize(face, (size, size), interpolation=cv2.INTER_LINEAR)
    return out


def effective_min_track(num_frames: int) -> int:
    """``MIN_TRACK``, or one less than the clip length for clips of at most ``MIN_TRACK`` frames."""
    return min(MIN_TRACK, max(num_frames - 1, 0))
