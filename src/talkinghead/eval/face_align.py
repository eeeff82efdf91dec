"""ArcFace input as insightface prepares it: faces aligned by 5 landmarks to a 112x112 template.

insightface (``utils/face_align.py``: ``estimate_norm`` + ``norm_crop``) maps the five points
(eye centres, nose tip, mouth corners; image-left first) onto ``ARCFACE_TEMPLATE`` with the
least-squares similarity transform (rotation, uniform scale, translation: skimage's
``SimilarityTransform.estimate``, i.e. Umeyama's method) and warps the uint8 image with
``cv2.warpAffine`` (bilinear, black border) straight to 112 x 112. The network then gets those
uint8 pixels, so nothing is resized on floats.

Our landmarks are the 68 points of the project's face backend (``data.face.FaceAnalyzer``, the
3DDFA head); the five points are the two eye-contour means, the nose tip (30) and the outer
mouth corners (48, 54), the usual reduction of the 68-point scheme.
"""

from __future__ import annotations

import cv2
import numpy as np

ARCFACE_SIZE = 112  # ArcFace input side, pixels
# insightface's arcface_dst: left eye, right eye, nose tip, left / right mouth corner (image
# left first), in the pixels of the 112 x 112 crop
ARCFACE_TEMPLATE = np.array(
    [
        [38.2946, 51.6963],
        [73.5318, 51.5014],
        [56.0252, 71.7366],
        [41.5493, 92.3655],
        [70.7299, 92.2041],
    ]
)
_LEFT_EYE, _RIGHT_EYE = slice(36, 42), slice(42, 48)  # 0-based 68-point eye contours
_NOSE_TIP, _MOUTH_LEFT, _MOUTH_RIGHT = 30, 48, 54


def five_points(landmarks68: np.ndarray) -> np.ndarray:
    """(68, >= 2) landmarks -> (5, 2): image-left eye, image-right eye, nose tip, mouth corners."""
    lm = np.asarray(landmarks68, dtype=np.float64)[:, :2]
    if lm.shape[0] != 68:
        raise ValueError(f"expected 68 landmarks, got {lm.shape[0]}")
    return np.stack(
        [
            lm[_LEFT_EYE].mean(0),
            lm[_RIGHT_EYE].mean(0),
            lm[_NOSE_TIP],
            lm[_MOUTH_LEFT],
            lm[_MOUTH_RIGHT],
        ]
    )


def similarity_transform(src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    """Least-squares similarity (2, 3) matrix ``M`` with ``dst ~ M @ [src, 1]``.

    In complex numbers the model is ``d = z * s + t`` (``z`` = scale x rotation); with centred
    points the least-squares ``z`` is ``sum(conj(s) d) / sum(|s|^2)``. This is the optimum over
    rotations (no reflection), uniform scales and translations that Umeyama's method finds.

    Args:
        src, dst: (N, 2) corresponding points, N >= 2, src not all equal.
    """
    s = np.asarray(src, dtype=np.float64) @ np.array([1.0, 1j])
    d = np.asarray(dst, dtype=np.float64) @ np.array([1.0, 1j])
    if s.shape != d.shape or s.ndim != 1 or len(s) < 2:
        raise ValueError(
            f"need (N, 2) point sets with N >= 2, got {np.shape(src)}, {np.shape(dst)}"
        )
    sc, dc = s - s.mean(), d - d.mean()
    spread = float(np.sum(np.abs(sc) ** 2))
    if spread == 0:
        raise ValueError("the source points all coincide")
    z = np.sum(np.conj(sc) * dc) / spread
    t = d.mean() - z * s.mean()
    return np.array([[z.real, -z.imag, t.real], [z.imag, z.real, t.imag]])


def align_face(image: np.ndarray, points5: np.ndarray, size: int = ARCFACE_SIZE) -> np.ndarray:
    """ArcFace crop (size, size, C) uint8 of ``image`` (H, W, C) uint8 given its (5, 2) points.

    ``size`` must be a multiple of 112 (the template scales with it), as in insightface.
    """
    if size % ARCFACE_SIZE:
        raise ValueError(f"size={size} must be a multiple of {ARCFACE_SIZE}")
    matrix = similarity_transform(points5, ARCFACE_TEMPLATE * (size / ARCFACE_SIZE))
    return cv2.warpAffine(image, matrix, (size, size), borderValue=0.0)


def box_crop(image: np.ndarray, box: np.ndarray, size: int = ARCFACE_SIZE) -> np.ndarray:
    """Fallback without landmarks: the square around ``box`` ``[x0, y0, x1, y1]`` (side = the
    larger box side, black outside the image), warped on uint8 to (size, size, C)."""
    x0, y0, x1, y1 = (float(v) for v in box[:4])
    side = max(x1 - x0, y1 - y0)
    scale = size / side
    cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
    matrix = np.array([[scale, 0, size / 2 - scale * cx], [0, scale, size / 2 - scale * cy]])
    return cv2.warpAffine(image, matrix, (size, size), borderValue=0.0)
