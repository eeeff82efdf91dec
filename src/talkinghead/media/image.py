"""Portrait loading: any common still image -> upright RGB uint8 array.

DAWN reads the portrait twice, with cv2 (BGR) for 3DDFA and with PIL (RGB) for the diffusion model
(dawn_spec.md §1.1 step 1, §1.4 step 1, §7 item 19); its RGBA branch is dead code and EXIF
orientation is ignored. We read once, with PIL, and normalise everything the two readers disagree
on: EXIF orientation is applied, transparency is composited on white (or dropped), grayscale,
palette, CMYK and 16-bit images become 8-bit RGB. Every later stage takes this (H, W, 3) RGB array.
"""

from __future__ import annotations

import io
import logging
from pathlib import Path
from typing import Literal

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

logger = logging.getLogger(__name__)

SUPPORTED_FORMATS: frozenset[str] = frozenset({"JPEG", "PNG", "WEBP", "BMP", "TIFF", "MPO"})
AlphaMode = Literal["white", "drop"]


class ImageError(ValueError):
    """The file is not a readable image in a supported format."""


def load_portrait(source: str | Path | bytes, *, alpha: AlphaMode = "white") -> np.ndarray:
    """Read a portrait as RGB uint8.

    Args:
        source: path of a JPEG / PNG / WebP (also BMP, TIFF) file, or its encoded bytes.
        alpha: ``"white"`` composites a transparent image on white (what a viewer shows);
            ``"drop"`` discards the alpha channel and keeps the stored colours.

    Returns:
        image: (H, W, 3) uint8 RGB, rotated upright according to the EXIF Orientation tag.

    Raises:
        FileNotFoundError: ``source`` is a path that does not exist.
        ImageError: the data is corrupt, truncated or in an unsupported format.
    """
    if alpha not in ("white", "drop"):
        raise ValueError(f"alpha={alpha!r} must be 'white' or 'drop'")
    name = "<bytes>" if isinstance(source, bytes) else str(source)
    if not isinstance(source, bytes) and not Path(source).is_file():
        raise FileNotFoundError(f"portrait {name} does not exist")
    try:
        with Image.open(io.BytesIO(source) if isinstance(source, bytes) else source) as img:
            fmt = img.format
            if fmt not in SUPPORTED_FORMATS:
                raise ImageError(
                    f"{name} is a {fmt} image; supported formats are JPEG, PNG and WebP"
                )
            img.load()  # decode now so truncated files fail here, not later
            upright = ImageOps.exif_transpose(img)
            return _to_rgb(upright if upright is not None else img, alpha)
    except ImageError:
        raise
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as err:
        raise ImageError(
            f"cannot read {name} as an image ({err}); use a valid JPEG, PNG or WebP file"
        ) from err


def _to_rgb(img: Image.Image, alpha: AlphaMode) -> np.ndarray:
    """Any PIL mode -> (H, W, 3) uint8 RGB."""
    if img.mode in ("I;16", "I;16B", "I;16L", "I", "F"):
        # 16/32-bit grayscale: PIL's convert("L") clips instead of rescaling, so scale by hand
        arr = np.asarray(img, dtype=np.float64)
        peak = 65535.0 if img.mode.startswith("I;16") or arr.max() > 255 else 255.0
        gray = np.clip(arr / peak * 255.0 + 0.5, 0, 255).astype(np.uint8)
        return np.repeat(gray[..., None], 3, axis=2)
    has_alpha = img.mode in ("RGBA", "LA", "PA", "RGBa", "La") or (
        img.mode == "P" and "transparency" in img.info
    )
    if has_alpha:
        rgba = img.convert("RGBA")
        if alpha == "drop":
            return np.asarray(rgba.convert("RGB"), dtype=np.uint8).copy()
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return np.asarray(Image.alpha_composite(background, rgba).convert("RGB"), dtype=np.uint8)
    return np.asarray(img.convert("RGB"), dtype=np.uint8).copy()


def rgb_to_bgr(image: np.ndarray) -> np.ndarray:
    """(H, W, 3) RGB -> BGR (what the FaceBoxes / 3DDFA weights were trained on), contiguous."""
    if image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f"expected an (H, W, 3) image, got shape {image.shape}")
    return np.ascontiguousarray(image[..., ::-1])
