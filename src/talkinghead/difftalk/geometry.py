"""Face geometry of DiffTalk: upper-face landmarks, the masked frame, the inference mask, paste-back.

From the official data loaders (spec §2.1, §4.1), with landmarks in pixels of the model's square
face crop (256 px for the official model; LdmNet eats them un-normalised):

* ``UPPER_FACE``: the 39 landmarks the model sees, 68-point indices 0-3 and 13-47 (jaw ends, brows,
  nose, eyes); the lower jaw 4-12 and the mouth 48-67 are left out so they carry no lip shape.
* ``masked_frame``: every row at or below the y of one landmark is black. The official inference
  cuts at landmark **33** (nose base, ``INFERENCE_MASK_LANDMARK``) but trains with landmark **30**
  (nose tip, ``TRAINING_MASK_LANDMARK``), so at inference a little more of the face is visible
  than in training; we keep both, as the official does.
* ``inference_mask``: the latent-resolution keep mask: 0 inside the polygon of jaw points 2..14
  and point 33, 1 elsewhere, drawn at crop resolution and shrunk with PIL bicubic as the official.
* ``paste_lower_face``: our addition (the official writes crops only): the generated crop goes
  back into the uncropped frame through a feathered version of that polygon, so nothing outside
  the lower face changes.
"""

from __future__ import annotations

import cv2
import numpy as np
from PIL import Image

UPPER_FACE: tuple[int, ...] = (*range(4), *range(13, 48))  # 39 landmark indices
JAW_POLYGON: tuple[int, ...] = (*range(2, 15), 33)  # the region DiffTalk regenerates
INFERENCE_MASK_LANDMARK = 33  # official inference: masked frame cut at the nose base
TRAINING_MASK_LANDMARK = 30  # official training: cut at the nose tip


def _check_landmarks(landmarks: np.ndarray) -> np.ndarray:
    landmarks = np.asarray(landmarks, np.float64)
    if landmarks.shape != (68, 2):
        raise ValueError(f"expected 68 (x, y) landmarks, got shape {landmarks.shape}")
    return landmarks


def upper_face_landmarks(landmarks: np.ndarray) -> np.ndarray:
    """(68, 2) crop-pixel landmarks -> (39, 2) float32, the points LdmNet encodes."""
    return _check_landmarks(landmarks)[list(UPPER_FACE)].astype(np.float32)


def landmarks_to_crop(
    landmarks: np.ndarray, box: tuple[int, int, int, int], size: int
) -> np.ndarray:
    """(68, 2) frame pixels -> pixels of the ``size`` x ``size`` crop of ``box`` (resized to a square)."""
    x0, y0, x1, y1 = box
    scale = np.array([size / (x1 - x0), size / (y1 - y0)])
    return (_check_landmarks(landmarks) - np.array([x0, y0])) * scale


def masked_frame(
    crop: np.ndarray, landmarks: np.ndarray, landmark: int = INFERENCE_MASK_LANDMARK
) -> np.ndarray:
    """(S, S, 3) uint8 crop with rows >= y(landmarks[landmark]) set to 0 (the official image_mask)."""
    row = int(np.clip(_check_landmarks(landmarks)[landmark, 1], 0, crop.shape[0]))
    out = crop.copy()
    out[row:] = 0
    return out


def jaw_polygon_mask(landmarks: np.ndarray, size: int) -> np.ndarray:
    """(size, size) uint8: 0 inside the jaw polygon (points 2..14 and 33), 1 elsewhere."""
    mask = np.ones((size, size), np.uint8)
    points = _check_landmarks(landmarks)[list(JAW_POLYGON)].astype(np.int32)
    cv2.fillPoly(mask, [points], 0)
    return mask


def inference_mask(landmarks: np.ndarray, size: int, latent_size: int) -> np.ndarray:
    """(latent_size, latent_size) float32 keep mask: 1 keep, 0 generate (official inference_mask).

    The 0/1 polygon image is resized with PIL bicubic like the official loader, so its values stay
    0 or 1 (uint8 rounding of the interpolated values).
    """
    image = Image.fromarray(jaw_polygon_mask(landmarks, size))
    small = image.resize((latent_size, latent_size), Image.BICUBIC)
    return (np.asarray(small) > 0).astype(np.float32)


def blend_mask(landmarks: np.ndarray, size: int, feather: float = 0.04) -> np.ndarray:
    """(size, size) float32 alpha for pasting: 1 in the jaw polygon, fading out over ``feather`` x size."""
    alpha = 1.0 - jaw_polygon_mask(landmarks, size).astype(np.float32)
    radius = max(1, round(feather * size))
    alpha = cv2.dilate(alpha, np.ones((radius, radius), np.uint8))
    return cv2.GaussianBlur(alpha, (0, 0), radius / 2)


def paste_lower_face(
    frame: np.ndarray, crop: np.ndarray, alpha: np.ndarray, box: tuple[int, int, int, int]
) -> np.ndarray:
    """Blend a generated (S, S, 3) ``crop`` into ``frame`` where ``alpha`` (S, S) is > 0.

    ``box`` is the crop box in frame pixels (it may leave the frame; those parts are dropped).
    Returns a new (H, W, 3) uint8 frame.
    """
    x0, y0, x1, y1 = box
    h, w = frame.shape[:2]
    ix0, iy0, ix1, iy1 = max(x0, 0), max(y0, 0), min(x1, w), min(y1, h)
    out = frame.copy()
    if ix1 <= ix0 or iy1 <= iy0:
        return out
    patch = cv2.resize(crop, (x1 - x0, y1 - y0), interpolation=cv2.INTER_CUBIC)
    a = cv2.resize(alpha, (x1 - x0, y1 - y0), interpolation=cv2.INTER_LINEAR)
    sl = (slice(iy0 - y0, iy1 - y0), slice(ix0 - x0, ix1 - x0))
    a = np.clip(a[sl], 0, 1)[..., None]
    region = out[iy0:iy1, ix0:ix1].astype(np.float32)
    blended = a * patch[sl].astype(np.float32) + (1 - a) * region
    out[iy0:iy1, ix0:ix1] = np.clip(blended + 0.5, 0, 255).astype(np.uint8)
    return out


def smooth_boxes(boxes: np.ndarray, window: int) -> np.ndarray:
    """Temporal moving average of face boxes over the frames that have one.

    Args:
        boxes: (F, 4) ``[x0, y0, x1, y1]``, NaN rows where no face was found.
        window: frames averaged (centred); 1 keeps the raw boxes.
    Returns:
        (F, 4) smoothed boxes, NaN where the input is NaN.
    """
    if window < 1:
        raise ValueError(f"box smoothing window={window} must be >= 1")
    boxes = np.asarray(boxes, np.float64)
    valid = ~np.isnan(boxes).any(axis=1)
    out = np.full_like(boxes, np.nan)
    index = np.flatnonzero(valid)
    half = window // 2
    for k, i in enumerate(index):
        neighbours = index[max(0, k - half) : k + half + 1]
        out[i] = boxes[neighbours].mean(axis=0)
    return out
