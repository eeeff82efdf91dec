"""Face crops: the square crop DAWN expects, the crop itself, paste-back, and the face box in crop pixels.

DAWN expects a face-centred square (its examples are square portraits where the face box is about
1/1.7 of the side). ``square_crop_box`` reproduces that framing for any photo, ``crop_and_resize`` cuts
it out (padding where it leaves the image), ``paste_back`` puts a generated frame back into the photo,
and ``face_bbox_in_crop`` gives the face-location bbox ``[x_min, x_max, y_min, y_max, H, W]`` the UNet's
face-location encoder reads (the detector box widened by ``BBOX_SCALE`` to the dense mesh's cheek extent).
"""

from __future__ import annotations

import cv2
import numpy as np

BBOX_SCALE = 1.1  # detector box -> approximate dense-mesh extent (horizontal)
CROP_MARGIN = 1.7  # crop side / mean face-box side, as in the official example portraits
CROP_SHIFT = 0.08  # crop centre moved up by this fraction of the mean face-box side


def square_crop_box(
    face_box: np.ndarray, image_size: tuple[int, int], margin: float = CROP_MARGIN
) -> tuple[int, int, int, int]:
    """Face-centred square crop ``(x0, y0, x1, y1)`` (ints, x1 - x0 == y1 - y0).

    Side = ``margin`` x the mean face-box side, centre moved up by ``CROP_SHIFT`` of it (to show
    some hair, like DAWN's examples). If the square fits in the image it is shifted inside it
    (no padding, face slightly off-centre); otherwise it stays centred and ``crop_and_resize`` pads.

    Args:
        face_box: (>= 4,) ``[x0, y0, x1, y1, ...]`` in pixels.
        image_size: ``(H, W)`` of the image.
    """
    if margin <= 0:
        raise ValueError(f"margin={margin} must be positive")
    h, w = image_size
    x0, y0, x1, y1 = (float(v) for v in face_box[:4])
    mean_side = (x1 - x0 + y1 - y0) / 2
    side = max(1, round(mean_side * margin))
    cx, cy = (x0 + x1) / 2, (y0 + y1) / 2 - CROP_SHIFT * mean_side
    left, top = round(cx - side / 2), round(cy - side / 2)
    if side <= w:
        left = min(max(left, 0), w - side)
    if side <= h:
        top = min(max(top, 0), h - side)
    return left, top, left + side, top + side


def crop_and_resize(
    image: np.ndarray, box: tuple[int, int, int, int], size: int, pad: str = "edge"
) -> np.ndarray:
    """Crop ``box`` from (H, W, 3) ``image`` and resize to (size, size, 3).

    ``pad``: ``"edge"`` replicates border pixels where the box leaves the image, ``"black"`` fills 0.
    """
    if pad not in ("edge", "black"):
        raise ValueError(f"pad={pad!r} must be 'edge' or 'black'")
    x0, y0, x1, y1 = box
    h, w = image.shape[:2]
    border = [max(0, -y0), max(0, y1 - h), max(0, -x0), max(0, x1 - w)]
    src = image
    if any(border):
        mode = cv2.BORDER_REPLICATE if pad == "edge" else cv2.BORDER_CONSTANT
        src = cv2.copyMakeBorder(image, *border, mode, value=0)
    crop = src[y0 + border[0] : y1 + border[0], x0 + border[2] : x1 + border[2]]
    interp = cv2.INTER_AREA if crop.shape[0] > size else cv2.INTER_CUBIC
    return cv2.resize(crop, (size, size), interpolation=interp)


def paste_back(
    original: np.ndarray, crop_frame: np.ndarray, box: tuple[int, int, int, int], feather: int = 0
) -> np.ndarray:
    """Inverse of ``crop_and_resize``: put a generated (S, S, 3) frame back into ``original``.

    ``feather`` > 0 blends a linear ramp of that many pixels at the crop's edges (hides seams
    where the generated background drifts). Parts of ``box`` outside the image are dropped.
    """
    x0, y0, x1, y1 = box
    side = x1 - x0
    patch = cv2.resize(crop_frame, (side, y1 - y0), interpolation=cv2.INTER_CUBIC)
    alpha = np.ones((y1 - y0, side), np.float32)
    if feather > 0:
        ramp = np.clip((np.arange(side, dtype=np.float32) + 0.5) / feather, 0, 1)
        ramp = np.minimum(ramp, ramp[::-1])
        alpha = np.minimum(ramp[None, :], ramp[: y1 - y0, None])
    h, w = original.shape[:2]
    ix0, iy0, ix1, iy1 = max(x0, 0), max(y0, 0), min(x1, w), min(y1, h)
    out = original.copy()
    if ix1 <= ix0 or iy1 <= iy0:
        return out
    sl = (slice(iy0 - y0, iy1 - y0), slice(ix0 - x0, ix1 - x0))
    a = alpha[sl][..., None]
    region = out[iy0:iy1, ix0:ix1].astype(np.float32)
    blended = a * patch[sl].astype(np.float32) + (1 - a) * region
    out[iy0:iy1, ix0:ix1] = np.clip(blended + 0.5, 0, 255).astype(original.dtype)
    return out


def face_bbox_in_crop(face_box: np.ndarray, crop_box: tuple[int, int, int, int]) -> np.ndarray:
    """(6,) int ``[x_min, x_max, y_min, y_max, H, W]`` of the widened face box in crop pixels."""
    x0, y0, x1, y1 = (float(v) for v in face_box[:4])
    half_w = (x1 - x0) * BBOX_SCALE / 2
    cx = (x0 + x1) / 2
    side = crop_box[2] - crop_box[0]
    xs = np.clip([cx - half_w - crop_box[0], cx + half_w - crop_box[0]], 0, side - 1)
    ys = np.clip([y0 - crop_box[1], y1 - crop_box[1]], 0, side - 1)
    return np.array([*xs, *ys, side, side]).astype(np.int64)
