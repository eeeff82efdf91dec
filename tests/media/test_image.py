"""load_portrait: EXIF orientation, alpha, grayscale, WebP and clear errors for bad files."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from talkinghead.media.image import ImageError, load_portrait, rgb_to_bgr

RED, BLUE = (255, 0, 0), (0, 0, 255)


def _two_halves(width: int = 40, height: int = 20) -> Image.Image:
    """Left half red, right half blue."""
    arr = np.zeros((height, width, 3), np.uint8)
    arr[:, : width // 2] = RED
    arr[:, width // 2 :] = BLUE
    return Image.fromarray(arr)


def test_exif_orientation_is_applied(tmp_path: Path) -> None:
    exif = Image.Exif()
    exif[0x0112] = 6  # Orientation: rotate 90 degrees clockwise to display
    path = tmp_path / "rotated.jpg"
    _two_halves().save(path, quality=95, exif=exif)
    img = load_portrait(path)
    assert img.shape == (40, 20, 3) and img.dtype == np.uint8
    # clockwise rotation moves the left (red) half to the top
    assert np.abs(img[2, 10].astype(int) - RED).max() < 40
    assert np.abs(img[-3, 10].astype(int) - BLUE).max() < 40


def test_rgba_png_on_white_or_dropped(tmp_path: Path) -> None:
    arr = np.zeros((8, 8, 4), np.uint8)
    arr[..., :3] = (10, 200, 30)
    arr[:, :4, 3] = 255  # left half opaque, right half fully transparent
    path = tmp_path / "alpha.png"
    Image.fromarray(arr, "RGBA").save(path)
    white = load_portrait(path)
    assert white.shape == (8, 8, 3)
    assert (white[:, :4] == (10, 200, 30)).all()
    assert (white[:, 4:] == 255).all()
    dropped = load_portrait(path, alpha="drop")
    assert (dropped == (10, 200, 30)).all()


def test_grayscale_becomes_rgb(tmp_path: Path) -> None:
    gray = np.tile(np.arange(0, 256, 8, dtype=np.uint8), (4, 1))
    path = tmp_path / "gray.png"
    Image.fromarray(gray, "L").save(path)
    img = load_portrait(path)
    assert img.shape == (4, 32, 3)
    assert (img == gray[..., None]).all()


def test_16bit_grayscale_is_rescaled(tmp_path: Path) -> None:
    arr = np.array([[0, 32768, 65535]], np.uint16)
    path = tmp_path / "gray16.png"
    Image.fromarray(arr).save(path)
    img = load_portrait(path)
    assert img[0, :, 0].tolist() == [0, 128, 255]


def test_webp_and_bytes_input(tmp_path: Path) -> None:
    buf = io.BytesIO()
    _two_halves().save(buf, format="WEBP", lossless=True)
    path = tmp_path / "face.webp"
    path.write_bytes(buf.getvalue())
    from_file, from_bytes = load_portrait(path), load_portrait(buf.getvalue())
    assert from_file.shape == (20, 40, 3)
    assert (from_file == from_bytes).all()
    assert (from_file[:, 0] == RED).all() and (from_file[:, -1] == BLUE).all()


def test_corrupt_truncated_and_unsupported_raise_image_error(tmp_path: Path) -> None:
    with pytest.raises(ImageError, match="cannot read"):
        load_portrait(b"definitely not an image")
    buf = io.BytesIO()
    _two_halves(200, 200).save(buf, format="JPEG")
    truncated = tmp_path / "cut.jpg"
    truncated.write_bytes(buf.getvalue()[: len(buf.getvalue()) // 3])
    with pytest.raises(ImageError):
        load_portrait(truncated)
    gif = tmp_path / "anim.gif"
    _two_halves().save(gif)
    with pytest.raises(ImageError, match="supported formats"):
        load_portrait(gif)
    assert issubclass(ImageError, ValueError)


def test_missing_file_and_bad_alpha() -> None:
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_portrait("/nonexistent/portrait.png")
    with pytest.raises(ValueError, match="alpha"):
        load_portrait(b"", alpha="black")  # type: ignore[arg-type]


def test_real_portrait_and_bgr(media_dir: Path) -> None:
    img = load_portrait(media_dir / "portraits" / "real_male1.jpeg")
    assert img.shape == (450, 450, 3) and img.dtype == np.uint8
    bgr = rgb_to_bgr(img)
    assert bgr.flags.c_contiguous and (bgr[..., 0] == img[..., 2]).all()
