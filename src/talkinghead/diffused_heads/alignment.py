"""Align a portrait to the CREMA framing of Diffused Heads with a similarity warp (no shear, no squash).

The released model only saw CREMA-D clips aligned by DinoMan/face-processor: 68 face-alignment landmarks
similarity-warped to a mean face, framed with offsets ``0.11`` (horizontal margin), ``0.335`` (top) and
``0.155`` (bottom) as fractions of the face size (diffusedheads_spec.md §1.1). ``mean_face.npy`` is not
available here, so the target is built from those offsets: the landmark box of the face (jaw to jaw,
brows to chin) grown by the offsets becomes the output frame (its longer side; the shorter is centred),
and three anchor points - the two eye centres and the mouth centre - are mapped to where they sit in
that frame for an upright face (``ANCHORS``: typical positions inside a 68-landmark box).

``crema_transform`` fits the similarity (rotation, uniform scale, translation) by least squares
(Umeyama 1991) to those anchors. Without landmarks (no 3DDFA weights) the detector box stands in for the
landmark box and no rotation is estimated.
"""

from __future__ import annotations

import cv2
import numpy as np

OFFSETS = (
    0.11,
    0.335,
    0.155,
)  # horizontal margin, top, bottom: fractions of the face size (face-processor)
# anchor points inside the 68-landmark box of an upright face, (x, y) as fractions of the box:
# left eye centre, right eye centre, mouth centre [typical values, not read from mean_face.npy]
ANCHORS = np.array([[0.30, 0.36], [0.70, 0.36], [0.50, 0.80]])
_LEFT_EYE, _RIGHT_EYE, _MOUTH = slice(36, 42), slice(42, 48), slice(48, 68)


def _target_frame() -> tuple[np.ndarray, float]:
    """Anchors in a unit face box placed inside the CREMA crop: (3, 2) positions and the crop side."""
    margin, top, bottom = OFFSETS
    width, height = 1 + 2 * margin, 1 + top + bottom
    side = max(width, height)
    offset = np.array([(side - width) / 2 + margin, (side - height) / 2 + top])
    return ANCHORS + offset, side


def landmark_anchors(landmarks: np.ndarray) -> np.ndarray:
    """(68, 2) landmarks -> (3, 2) eye centres and mouth centre."""
    return np.stack(
        [landmarks[_LEFT_EYE].mean(0), landmarks[_RIGHT_EYE].mean(0), landmarks[_MOUTH].mean(0)]
    )


def box_anchors(box: np.ndarray) -> np.ndarray:
    """(>= 4,) detector box ``[x0, y0, x1, y1]`` -> (3, 2) anchors of an upright face in that box."""
    x0, y0, x1, y1 = (float(v) for v in box[:4])
    return np.array([x0, y0]) + ANCHORS * np.array([x1 - x0, y1 - y0])


def similarity(src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    """Least-squares similarity (Umeyama) mapping (N, 2) ``src`` onto ``dst``: a (2, 3) matrix."""
    mu_s, mu_d = src.mean(0), dst.mean(0)
    s, d = src - mu_s, dst - mu_d
    cov = d.T @ s / len(src)
    u, sig, vt = np.linalg.svd(cov)
    flip = np.diag([1.0, np.sign(np.linalg.det(u @ vt))])
    rot = u @ flip @ vt
    scale = np.trace(np.diag(sig) @ flip) / (s**2).sum(1).mean()
    return np.hstack([scale * rot, (mu_d - scale * rot @ mu_s)[:, None]])


def crema_transform(
    size: int,
    *,
    landmarks: np.ndarray | None = None,
    box: np.ndarray | None = None,
    margin: float = 1.0,
) -> np.ndarray:
    """(2, 3) affine matrix from original pixels to the aligned (size x size) CREMA frame.

    Args:
        size: output side in pixels.
        landmarks: (68, 2) face landmarks in pixels (preferred).
        box: detector box, used when there are no landmarks.
        margin: > 1 zooms out (more context around the face), < 1 zooms in.
    """
    if landmarks is None and box is None:
        raise ValueError("crema_transform needs landmarks or a face box")
    if margin <= 0:
        raise ValueError(f"margin={margin} must be positive")
    anchors, side = _target_frame()
    target = (anchors - side / 2) / margin + side / 2
    src = landmark_anchors(landmarks) if landmarks is not None else box_anchors(box)  # type: ignore[arg-type]
    return similarity(src, target * size / side)


def warp_to_crema(image: np.ndarray, matrix: np.ndarray, size: int) -> np.ndarray:
    """(H, W, 3) uint8 -> (size, size, 3) uint8 aligned frame (edges replicated outside the photo)."""
    return cv2.warpAffine(
        image,
        matrix,
        (size, size),
        flags=cv2.INTER_AREA if matrix[0, 0] < 1 else cv2.INTER_CUBIC,
        borderMode=cv2.BORDER_REPLICATE,
    )


def paste_aligned(
    original: np.ndarray, frame: np.ndarray, matrix: np.ndarray, feather: int = 8
) -> np.ndarray:
    """Put a generated aligned frame back into the original photo (inverse warp, feathered edges).

    Args:
        original: (H, W, 3) uint8 photo.
        frame: (S, S, 3) uint8 frame in the aligned space of ``matrix`` scaled to S.
        matrix: the (2, 3) transform used for a ``frame.shape[0]``-pixel aligned frame.
        feather: width in aligned pixels of the linear blend ramp at the frame's edges.
    """
    h, w = original.shape[:2]
    side = frame.shape[0]
    inverse = cv2.invertAffineTransform(matrix)
    ramp = np.clip((np.arange(side, dtype=np.float32) + 0.5) / max(feather, 1), 0, 1)
    ramp = np.minimum(ramp, ramp[::-1])
    mask = np.minimum(ramp[None, :], ramp[:, None])
    back = cv2.warpAffine(
        frame, inverse, (w, h), flags=cv2.INTER_CUBIC, borderMode=cv2.BORDER_REPLICATE
    )
    alpha = cv2.warpAffine(mask, inverse, (w, h), flags=cv2.INTER_LINEAR, borderValue=0)[..., None]
    blended = alpha * back.astype(np.float32) + (1 - alpha) * original.astype(np.float32)
    return np.clip(blended + 0.5, 0, 255).astype(np.uint8)
