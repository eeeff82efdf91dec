"""Face signals for the metrics that need a face: boxes, landmarks, head motion, eye openness.

Faces come from the project's face analysis (``data.face.FaceAnalyzer``): FaceBoxes and the 3DDFA
landmark head when the eval weights folder holds the 3DDFA_V2 assets (``face3d/``), otherwise its
weight-free fallback (OpenCV's Haar cascade, or a centred face where OpenCV has none).

* face boxes (T, 4): the largest face of every ``every``-th frame, linearly interpolated and
  median smoothed over 5 frames; the centred square when no frame has a face.
* landmarks (T, 68, 2): the 3DDFA 68 points of every frame inside its box (only with weights).
* motion for BAS, best first: ``<stem>.pose.npy`` (``talkinghead generate --save-motion``), the
  landmarks without the lips (48 points: contour, brows, nose, eyes; speech articulation is not
  head motion), the face-box centre and size, or without any detected face the translation of
  each frame against the first (phase correlation; talking-head backgrounds are static).
* eye openness (T,): edge energy (mean |Laplacian|) of the eye band of the face box, normalised
  by its median. Open eyes show sharp iris/sclera/lid edges; a closed lid is nearly uniform skin,
  so blinks are dips, like eye-aspect-ratio dips. ``<stem>.blink.npy`` (DAWN's raw eye ratios)
  replace it.
"""

from __future__ import annotations

import logging

import cv2
import numpy as np
from scipy.ndimage import median_filter

from talkinghead.face.analysis import FaceAnalyzer, haar_available, largest_face
from talkinghead.media.image import rgb_to_bgr

logger = logging.getLogger(__name__)

HEAD_LANDMARKS = np.r_[0:48]  # 68-point indices used for head motion: all but the lips (48-67)


def detector_name(analyzer: FaceAnalyzer) -> str:
    """Which detector ``analyzer.detect`` runs: ``faceboxes``, ``haar`` or ``centre``."""
    if analyzer.detector is not None:
        return "faceboxes"
    return "haar" if haar_available() else "centre"


def face_boxes(
    frames: np.ndarray, analyzer: FaceAnalyzer, every: int = 5
) -> tuple[np.ndarray, bool]:
    """Face boxes (T, 4) ``[x0, y0, x1, y1]`` pixels of RGB frames (T, H, W, 3), and whether any
    frame had a detected face (False: the centred square of side min(H, W) everywhere)."""
    t, h, w = frames.shape[:3]
    found_t, found_box = [], []
    for i in range(0, t, every):
        dets = analyzer.detect(frames[i])
        if len(dets):
            found_t.append(i)
            found_box.append(largest_face(dets)[:4])
    if not found_t:
        side = min(h, w)
        box = [(w - side) / 2, (h - side) / 2, (w + side) / 2, (h + side) / 2]
        return np.tile(np.asarray(box, dtype=np.float64), (t, 1)), False
    found = np.asarray(found_box, dtype=np.float64)
    boxes = np.stack([np.interp(np.arange(t), found_t, found[:, k]) for k in range(4)], axis=1)
    return median_filter(boxes, size=(5, 1), mode="nearest"), True


def face_landmarks(
    frames: np.ndarray, boxes: np.ndarray, analyzer: FaceAnalyzer
) -> np.ndarray | None:
    """68 landmarks (T, 68, 2) in pixels per frame from the 3DDFA head, or None without it."""
    if analyzer.regressor is None:
        return None
    out = np.empty((len(frames), 68, 2))
    for i, (frame, box) in enumerate(zip(frames, boxes)):
        out[i] = analyzer.regress(rgb_to_bgr(frame), box)[1]
    return out


def box_motion(boxes: np.ndarray, frame_hw: tuple[int, int]) -> np.ndarray:
    """(T, 3) face-box centre x, y and mean side as fractions of the frame, from (T, 4) boxes."""
    h, w = frame_hw
    b = np.asarray(boxes, dtype=np.float64)
    centre_and_size = np.stack(
        [
            (b[:, 0] + b[:, 2]) / 2,
            (b[:, 1] + b[:, 3]) / 2,
            (b[:, 2] - b[:, 0] + b[:, 3] - b[:, 1]) / 2,
        ],
        axis=1,
    )
    return centre_and_size / np.array([w, h, min(h, w)], dtype=np.float64)


def phase_motion(frames: np.ndarray) -> np.ndarray:
    """(T, 3) translation of each frame against the first (phase correlation) as fractions of the
    frame in x, y, and a constant size column (0): the motion when no face is found."""
    h, w = frames.shape[1:3]
    window = cv2.createHanningWindow((w, h), cv2.CV_64F)
    first = cv2.cvtColor(frames[0], cv2.COLOR_RGB2GRAY).astype(np.float64)
    out = np.zeros((len(frames), 3))
    for i in range(1, len(frames)):
        gray = cv2.cvtColor(frames[i], cv2.COLOR_RGB2GRAY).astype(np.float64)
        (dx, dy), _ = cv2.phaseCorrelate(first, gray, window)
        out[i, 0] = dx / w
        out[i, 1] = dy / h
    return out


def eye_openness(frames: np.ndarray, boxes: np.ndarray) -> np.ndarray:
    """(T,) eye-band edge energy normalised by its median (about 1 when open, dips when closed).

    Args:
        frames: (T, H, W, 3) RGB.  boxes: (T, 4) face boxes ``[x0, y0, x1, y1]``.
    """
    values = np.empty(len(frames))
    for i, (frame, box) in enumerate(zip(frames, boxes)):
        h, w = frame.shape[:2]
        cx, cy = (box[0] + box[2]) / 2, (box[1] + box[3]) / 2
        side = max(box[2] - box[0], box[3] - box[1])
        # Eyes sit about 20-50% down and 15-85% across a frontal face box.
        y0 = int(np.clip(cy - side * 0.3, 0, h - 1))
        y1 = int(np.clip(cy - side * 0.0, y0 + 1, h))
        x0 = int(np.clip(cx - side * 0.3, 0, w - 1))
        x1 = int(np.clip(cx + side * 0.3, x0 + 1, w))
        band = cv2.cvtColor(frame[y0:y1, x0:x1], cv2.COLOR_RGB2GRAY).astype(np.float64)
        values[i] = np.abs(cv2.Laplacian(band, cv2.CV_64F)).mean()
    med = np.median(values)
    return values / med if med > 0 else np.ones_like(values)
