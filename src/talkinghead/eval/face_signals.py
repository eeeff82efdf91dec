"""Light face signals for metrics that need landmarks: face boxes, head-motion and eye-openness.

The paper measures blinks with eye aspect ratios from facial landmarks and beat alignment on
head pose. To stay dependency-light we approximate from OpenCV alone (documented in the report):

* face box: OpenCV's Haar frontal-face cascade on a subset of frames, interpolated and median
  smoothed; the centred square is used when no face is found or when the installed OpenCV has no
  cascade detector (OpenCV 5 dropped ``CascadeClassifier`` from the main package). Generated
  talking heads are centred face crops, so the centred square is a fair default.
* head-motion curve (T, 3): face-box centre x, y and size, normalised by the frame size -- a
  stand-in for DAWN's 6-d pose (yaw/pitch/roll need landmarks). Without a detector, the
  translation of each frame against the first (phase correlation; talking-head backgrounds are
  static) stands in for the box centre. ``<stem>.pose.npy`` files written
  by ``talkinghead generate --save-motion`` replace it when present.
* eye openness (T,): edge energy (mean |Laplacian|) of the eye band of the face box, normalised
  by its median. Open eyes show sharp iris/sclera/lid edges; a closed lid is nearly uniform skin,
  so blinks are dips, like eye-aspect-ratio dips. ``<stem>.blink.npy`` (DAWN's raw eye ratios) replace it.
"""

from __future__ import annotations

import logging
from functools import cache

import cv2
import numpy as np
from scipy.ndimage import median_filter

logger = logging.getLogger(__name__)


@cache
def _cascade() -> object | None:
    """OpenCV's Haar face detector, or None where this OpenCV build has none."""
    factory = getattr(cv2, "CascadeClassifier", None)
    data = getattr(getattr(cv2, "data", None), "haarcascades", None)
    if factory is None or data is None:
        logger.info("OpenCV has no Haar cascade detector; using centred face boxes")
        return None
    detector = factory(data + "haarcascade_frontalface_default.xml")
    return None if detector.empty() else detector


def face_boxes(frames: np.ndarray, every: int = 5) -> np.ndarray:
    """Square face boxes (T, 3) as (centre x, centre y, side) in pixels for RGB frames (T, H, W, 3)."""
    t, h, w = frames.shape[:3]
    detector = _cascade()
    keys = list(range(0, t, every)) if detector is not None else []
    found_t, found_box = [], []
    for i in keys:
        gray = cv2.cvtColor(frames[i], cv2.COLOR_RGB2GRAY)
        faces = detector.detectMultiScale(  # type: ignore[attr-defined]
            gray, 1.1, 4, minSize=(max(16, min(h, w) // 8),) * 2
        )
        if len(faces):
            x, y, fw, fh = max(faces, key=lambda f: f[2] * f[3])
            found_t.append(i)
            found_box.append((x + fw / 2, y + fh / 2, max(fw, fh)))
    if not found_t:
        return np.tile(np.array([w / 2, h / 2, min(h, w)], dtype=np.float64), (t, 1))
    found = np.asarray(found_box, dtype=np.float64)
    boxes = np.stack([np.interp(np.arange(t), found_t, found[:, k]) for k in range(3)], axis=1)
    return median_filter(boxes, size=(5, 1), mode="nearest")


def crop_faces(frames: np.ndarray, boxes: np.ndarray, size: int, scale: float = 1.4) -> np.ndarray:
    """Square crops (T, size, size, 3) around ``boxes`` enlarged by ``scale`` (edge-padded)."""
    out = np.empty((len(frames), size, size, 3), dtype=np.uint8)
    for i, (frame, (cx, cy, side)) in enumerate(zip(frames, boxes)):
        half = round(side * scale / 2)
        padded = cv2.copyMakeBorder(frame, half, half, half, half, cv2.BORDER_REPLICATE)
        x0, y0 = round(cx), round(cy)  # centre + half padding - half = top-left
        crop = padded[y0 : y0 + 2 * half, x0 : x0 + 2 * half]
        out[i] = cv2.resize(crop, (size, size), interpolation=cv2.INTER_AREA)
    return out


def head_motion_curve(frames: np.ndarray, boxes: np.ndarray) -> np.ndarray:
    """(T, 3) head-pose proxy as fractions of the frame: face centre x, y and size.

    When the boxes are constant (no detector, or no face found) the centre comes from the
    phase-correlation shift of each frame against the first one instead.
    """
    h, w = frames.shape[1:3]
    scale = np.array([w, h, min(h, w)], dtype=np.float64)
    if np.ptp(boxes, axis=0).max() > 0:
        return boxes / scale
    window = cv2.createHanningWindow((w, h), cv2.CV_64F)
    first = cv2.cvtColor(frames[0], cv2.COLOR_RGB2GRAY).astype(np.float64)
    out = np.tile(boxes[0] / scale, (len(frames), 1))
    for i in range(1, len(frames)):
        gray = cv2.cvtColor(frames[i], cv2.COLOR_RGB2GRAY).astype(np.float64)
        (dx, dy), _ = cv2.phaseCorrelate(first, gray, window)
        out[i, 0] += dx / w
        out[i, 1] += dy / h
    return out


def eye_openness(frames: np.ndarray, boxes: np.ndarray) -> np.ndarray:
    """(T,) eye-band edge energy normalised by its median (about 1 when open, dips when closed)."""
    values = np.empty(len(frames))
    for i, (frame, (cx, cy, side)) in enumerate(zip(frames, boxes)):
        h, w = frame.shape[:2]
        # Eyes sit about 20-50% down and 15-85% across a frontal face box.
        y0 = int(np.clip(cy - side * 0.3, 0, h - 1))
        y1 = int(np.clip(cy - side * 0.0, y0 + 1, h))
        x0 = int(np.clip(cx - side * 0.3, 0, w - 1))
        x1 = int(np.clip(cx + side * 0.3, x0 + 1, w))
        band = cv2.cvtColor(frame[y0:y1, x0:x1], cv2.COLOR_RGB2GRAY).astype(np.float64)
        values[i] = np.abs(cv2.Laplacian(band, cv2.CV_64F)).mean()
    med = np.median(values)
    return values / med if med > 0 else np.ones_like(values)
