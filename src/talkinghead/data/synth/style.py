"""The look of a synthetic face, drawn from a seed: head shape, skin, hair, eyes, lips, clothes, background.

``sample_style`` draws a ``FaceStyle``: ellipsoid head of varied shape, skin tone, hair style and
colour, eye shape and iris colour, eyebrows, nose, lips, clothes and a solid / gradient / radial /
textured background (``render_background``). ``synth/face.py`` renders frames of it.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

__all__ = ["BACKGROUNDS", "HAIR_STYLES", "FaceStyle", "render_background", "sample_style"]

HAIR_STYLES = ("short", "long", "bald", "bun")
BACKGROUNDS = ("solid", "gradient", "radial", "texture")


@dataclass(frozen=True)
class FaceStyle:
    """Appearance of one synthetic person; lengths in face units (u, v in [-1, 1]) unless noted."""

    face_w: float  # half-width of the face, fraction of the frame side
    face_h: float  # half-height of the face, fraction of the frame side
    depth: float  # half-depth of the head / half-width
    skin: tuple[float, float, float]  # RGB 0..255
    hair: tuple[float, float, float]
    hair_style: str  # one of HAIR_STYLES
    hairline: float  # v of the hairline at the centre (< 0: above the eyes)
    hairline_curve: float  # how far the hairline drops at the temples
    eye_x: float  # u of the eye centres (+/-)
    eye_y: float  # v of the eye centres
    eye_w: float  # eye half-width in u
    eye_ratio: tuple[float, float]  # openness ratio of the open [left, right] eye
    iris: tuple[float, float, float]
    brow_gap: float  # v distance of the eyebrow above the eye
    brow_thick: float  # eyebrow thickness in v
    brow_tilt: float  # v rise of the outer brow end
    nose_len: float  # nose tip protrusion / head depth
    nose_y: float  # v of the nose tip
    mouth_y: float  # v of the mouth centre
    mouth_w: float  # mouth half-width in u
    lips: tuple[float, float, float]
    max_open: float  # mouth opening at mouth_open = 1, in v
    clothes: tuple[float, float, float]
    background: str  # one of BACKGROUNDS
    bg_colors: tuple[tuple[float, float, float], tuple[float, float, float]]
    bg_angle: float  # radians, gradient direction
    texture_seed: int


def _color(
    rng: np.random.Generator,
    hue: tuple[float, float],
    sat: tuple[float, float],
    val: tuple[float, float],
) -> tuple[float, float, float]:
    """A random RGB colour (0..255) from HSV ranges (hue in degrees)."""
    hsv = np.array(
        [[[rng.uniform(*hue) / 2 % 180, rng.uniform(*sat) * 255, rng.uniform(*val) * 255]]]
    )
    rgb = cv2.cvtColor(hsv.astype(np.uint8), cv2.COLOR_HSV2RGB)[0, 0]
    return tuple(float(c) for c in rgb)


def sample_style(rng: np.random.Generator) -> FaceStyle:
    """Draw a random appearance."""
    skin_v = rng.uniform(0.3, 0.97)
    ratio = rng.uniform(0.26, 0.36)
    return FaceStyle(
        face_w=rng.uniform(0.17, 0.23),
        face_h=rng.uniform(0.24, 0.29),
        depth=rng.uniform(0.85, 1.05),
        skin=_color(rng, (12, 32), (0.25, 0.6), (skin_v, skin_v)),
        hair=_color(rng, (0, 45), (0.1, 0.8), (0.05, 0.85))
        if rng.random() < 0.9
        else _color(rng, (0, 360), (0.5, 0.9), (0.4, 0.9)),
        hair_style=HAIR_STYLES[int(rng.choice(4, p=[0.42, 0.35, 0.08, 0.15]))],
        hairline=rng.uniform(-0.72, -0.5),
        hairline_curve=rng.uniform(0.05, 0.45),
        eye_x=rng.uniform(0.34, 0.44),
        eye_y=rng.uniform(-0.16, -0.04),
        eye_w=rng.uniform(0.14, 0.2),
        eye_ratio=(ratio + rng.uniform(-0.01, 0.01), ratio + rng.uniform(-0.01, 0.01)),
        iris=_color(rng, (10, 220), (0.3, 0.9), (0.2, 0.7)),
        brow_gap=rng.uniform(0.11, 0.18),
        brow_thick=rng.uniform(0.025, 0.06),
        brow_tilt=rng.uniform(-0.03, 0.05),
        nose_len=rng.uniform(0.12, 0.25),
        nose_y=rng.uniform(0.2, 0.3),
        mouth_y=rng.uniform(0.5, 0.6),
        mouth_w=rng.uniform(0.26, 0.36),
        lips=_color(rng, (345, 375), (0.3, 0.65), (0.45, 0.8)),
        max_open=rng.uniform(0.16, 0.24),
        clothes=_color(rng, (0, 360), (0.0, 0.8), (0.15, 0.9)),
        background=BACKGROUNDS[int(rng.integers(0, len(BACKGROUNDS)))],
        bg_colors=(
            _color(rng, (0, 360), (0.0, 0.6), (0.2, 0.95)),
            _color(rng, (0, 360), (0.0, 0.6), (0.2, 0.95)),
        ),
        bg_angle=rng.uniform(0, 2 * np.pi),
        texture_seed=int(rng.integers(0, 2**31)),
    )


def render_background(style: FaceStyle, size: int) -> np.ndarray:
    """(size, size, 3) float32 background in 0..255."""
    c0, c1 = (np.array(c, np.float32) for c in style.bg_colors)
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32) / max(size - 1, 1)
    if style.background == "solid":
        t = np.zeros_like(xx)
    elif style.background == "gradient":
        t = (xx - 0.5) * np.cos(style.bg_angle) + (yy - 0.5) * np.sin(style.bg_angle) + 0.5
    elif style.background == "radial":
        t = np.sqrt((xx - 0.5) ** 2 + (yy - 0.45) ** 2) * 1.4
    else:
        noise = np.random.default_rng(style.texture_seed).random((6, 6)).astype(np.float32)
        fine = np.random.default_rng(style.texture_seed + 1).random((24, 24)).astype(np.float32)
        t = 0.75 * cv2.resize(noise, (size, size), interpolation=cv2.INTER_CUBIC)
        t += 0.25 * cv2.resize(fine, (size, size), interpolation=cv2.INTER_CUBIC)
    t = np.clip(t, 0.0, 1.0)[..., None]
    return c0 * (1 - t) + c1 * t
