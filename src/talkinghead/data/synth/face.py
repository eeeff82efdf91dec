"""Drawing of the synthetic talking faces: one rendered frame per state.

Used by ``synth/clips.py`` (``talkinghead data synth``) with a ``FaceStyle`` (``synth/style.py``).
``render_frame`` draws a ``FrameState`` (head pose, eye and mouth opening, gaze): facial features are
points on the head ellipsoid, rotated and projected orthographically (the silhouette is the exact
projected ellipse), filled as anti-aliased OpenCV polygons. It returns the frame with its ground
truth: eye openness ratios (vertical / horizontal as 3DDFA's ``calculate_eye``, spec §1.1; ~0.3
open, 0.05 closed; "left" = the subject's left = image right), the face bbox
``[x_min, x_max, y_min, y_max, H, W]`` and the mouth box ``[x0, y0, x1, y1]``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import cv2
import numpy as np

from talkinghead.data.synth.style import FaceStyle

__all__ = ["CLOSED_EYE_RATIO", "FrameState", "render_frame"]

CLOSED_EYE_RATIO = 0.05  # eye openness ratio of a closed eye
_SHIFT = 4  # OpenCV fixed-point bits: polygons are placed to 1/16 pixel


@dataclass(frozen=True)
class FrameState:
    """Head and face state of one frame."""

    yaw: float  # degrees; > 0 turns the nose to the image right
    pitch: float  # degrees; > 0 tilts the nose down
    roll: float  # degrees; > 0 rotates clockwise in the image
    scale: float  # relative head size (1 = nominal)
    dx: float  # head translation, fraction of the frame side (right)
    dy: float  # head translation, fraction of the frame side (down)
    eye_open: float  # 0 closed .. 1 open
    mouth_open: float  # 0 closed .. 1 widest
    gaze: tuple[float, float]  # iris offset, fraction of the eye half-width


class _Head:
    """Projection of head-surface points for one frame (orthographic, image y down, z to camera)."""

    def __init__(self, style: FaceStyle, state: FrameState, size: int, zoom: float = 1.0) -> None:
        self.a = style.face_w * size * state.scale * zoom  # half-axes in pixels
        self.b = style.face_h * size * state.scale * zoom
        self.c = style.depth * self.a
        y, p, r = np.deg2rad([state.yaw, state.pitch, state.roll])
        rot_x = np.array([[1, 0, 0], [0, np.cos(p), -np.sin(p)], [0, np.sin(p), np.cos(p)]])
        rot_y = np.array([[np.cos(y), 0, np.sin(y)], [0, 1, 0], [-np.sin(y), 0, np.cos(y)]])
        rot_z = np.array([[np.cos(r), -np.sin(r), 0], [np.sin(r), np.cos(r), 0], [0, 0, 1]])
        self.rot = rot_z @ rot_y @ rot_x
        # a camera zoom about the frame centre: zoom = 1 puts the head centre at (0.5, 0.47) + (dx, dy)
        self.center = (0.5 + zoom * np.array([state.dx, state.dy - 0.03])) * size

    def project(
        self, u: np.ndarray, v: np.ndarray, z: np.ndarray | None = None, lift: float = 0.0
    ) -> np.ndarray:
        """Face-unit points -> (N, 2) pixels; ``z`` (in units of the depth) defaults to the surface."""
        u, v = np.broadcast_arrays(np.asarray(u, float), np.asarray(v, float))
        if z is None:
            z = np.sqrt(np.clip(1.0 - u**2 - v**2, 0.0, None)) + lift
        pts = np.stack([u * self.a, v * self.b, np.broadcast_to(z, u.shape) * self.c])
        return (self.rot @ pts)[:2].T + self.center

    def silhouette(
        self, sx: float = 1.0, sy: float = 1.0, sz: float = 1.0, dv: float = 0.0, n: int = 64
    ) -> np.ndarray:
        """(n, 2) outline of the (scaled, shifted by ``dv``) head ellipsoid: exact projection."""
        cov = (
            self.rot
            @ np.diag([(sx * self.a) ** 2, (sy * self.b) ** 2, (sz * self.c) ** 2])
            @ self.rot.T
        )
        chol = np.linalg.cholesky(cov[:2, :2])
        t = np.linspace(0, 2 * np.pi, n, endpoint=False)
        offset = self.rot[:2, 1] * dv * self.b
        return (chol @ np.stack([np.cos(t), np.sin(t)])).T + self.center + offset


def _mask(shape: tuple[int, int], polys: Sequence[np.ndarray]) -> np.ndarray:
    """Anti-aliased fill of polygons -> (H, W) float32 coverage in [0, 1]."""
    canvas = np.zeros(shape, np.uint8)
    fixed = [np.round(p * (1 << _SHIFT)).astype(np.int32) for p in polys]
    cv2.fillPoly(canvas, fixed, 255, lineType=cv2.LINE_AA, shift=_SHIFT)
    return canvas.astype(np.float32) / 255.0


def _paint(
    img: np.ndarray, mask: np.ndarray, color: Sequence[float] | np.ndarray, alpha: float = 1.0
) -> None:
    """Blend ``color`` (3,) or (H, W, 3) into ``img`` where ``mask`` covers it."""
    rows, cols = np.flatnonzero(mask.any(1)), np.flatnonzero(mask.any(0))
    if rows.size == 0:
        return
    # blend only inside the mask's bounding box: most features cover a small part of the frame
    box = np.s_[rows[0] : rows[-1] + 1, cols[0] : cols[-1] + 1]
    color = np.asarray(color, np.float32)
    if color.ndim == 3:
        color = color[box]
    img[box] += (color - img[box]) * (mask[box] * alpha)[..., None]


def _curve(x0: float, x1: float, n: int = 24) -> np.ndarray:
    return np.linspace(x0, x1, n)


def _draw_eye(
    img: np.ndarray, head: _Head, style: FaceStyle, state: FrameState, side: int, ratio_open: float
) -> float:
    """Draw one eye (side -1 = image left); returns its openness ratio."""
    shape, w = img.shape[:2], style.eye_w
    cx, cy = side * style.eye_x, style.eye_y
    ratio = CLOSED_EYE_RATIO + (ratio_open - CLOSED_EYE_RATIO) * state.eye_open
    height = ratio * 2 * w * head.a / head.b  # opening in v units
    t = _curve(-1, 1)
    u = cx + t * w
    lid_up = cy - 0.6 * height * (1 - t**2) ** 0.7 - 0.1 * height
    lid_lo = cy + 0.4 * height * (1 - t**2) ** 0.9 - 0.1 * height
    eye = head.project(np.r_[u, u[::-1]], np.r_[lid_up, lid_lo[::-1]])
    eye_mask = _mask(shape, [eye])
    _paint(img, eye_mask, (240, 238, 232))
    ang = np.linspace(0, 2 * np.pi, 24, endpoint=False)
    ri = 0.55 * w
    gx, gy = state.gaze
    iris_u, iris_v = (
        cx + gx * w + ri * np.cos(ang),
        cy + gy * w * 0.3 + ri * np.sin(ang) * head.a / head.b,
    )
    _paint(img, eye_mask * _mask(shape, [head.project(iris_u, iris_v)]), style.iris)
    pupil = head.project(
        cx + gx * w + 0.45 * ri * np.cos(ang),
        cy + gy * w * 0.3 + 0.45 * ri * np.sin(ang) * head.a / head.b,
    )
    _paint(img, eye_mask * _mask(shape, [pupil]), (15, 12, 12))
    thick = max(1, round(img.shape[0] / 90))
    upper = np.round(head.project(u, lid_up) * (1 << _SHIFT)).astype(np.int32)
    lash = np.zeros(shape, np.uint8)
    cv2.polylines(lash, [upper], False, 255, thick, cv2.LINE_AA, _SHIFT)
    _paint(img, lash.astype(np.float32) / 255, (35, 25, 25), 0.9)
    crease = head.project(u[3:-3], lid_up[3:-3] - 0.35 * w * head.a / head.b * 0.5 - 0.02)
    lash[:] = 0
    cv2.polylines(
        lash,
        [np.round(crease * (1 << _SHIFT)).astype(np.int32)],
        False,
        255,
        max(1, thick // 2),
        cv2.LINE_AA,
        _SHIFT,
    )
    _paint(img, lash.astype(np.float32) / 255, np.array(style.skin) * 0.6, 0.5)
    return ratio


def _draw_brow(img: np.ndarray, head: _Head, style: FaceStyle, side: int) -> None:
    t = _curve(-1, 1, 16)
    u = side * (style.eye_x + t * style.eye_w * 1.25)
    arch = -0.04 * (1 - t**2) - style.brow_tilt * (side * t > 0) * np.abs(t)
    v = style.eye_y - style.brow_gap + arch
    half = style.brow_thick * (1 - 0.5 * np.abs(t - 0.3 * side) / 1.3)
    poly = head.project(np.r_[u, u[::-1]], np.r_[v - half, (v + half)[::-1]], lift=0.02)
    _paint(img, _mask(img.shape[:2], [poly]), np.array(style.hair) * 0.8 + 10, 0.95)


def _draw_nose(img: np.ndarray, head: _Head, style: FaceStyle) -> None:
    shape, skin = img.shape[:2], np.array(style.skin)
    tip = head.project(0.0, style.nose_y, z=1.0 + style.nose_len)
    bridge = head.project(np.array([-0.06, 0.06]), np.array([style.eye_y] * 2))
    wings = head.project(np.array([-0.14, 0.14]), np.array([style.nose_y + 0.02] * 2))
    _paint(
        img,
        _mask(shape, [np.array([bridge[0], bridge[1], wings[1], tip, wings[0]])]),
        skin * 0.8,
        0.45,
    )
    ang = np.linspace(0, 2 * np.pi, 12, endpoint=False)
    for side in (-1, 1):
        nostril = head.project(
            side * 0.07 + 0.035 * np.cos(ang), style.nose_y + 0.05 + 0.018 * np.sin(ang), lift=0.05
        )
        _paint(img, _mask(shape, [nostril]), skin * 0.35, 0.8)


def _draw_mouth(img: np.ndarray, head: _Head, style: FaceStyle, opening: float) -> np.ndarray:
    """Draw lips, inner mouth and teeth; returns the (4,) mouth box [x0, y0, x1, y1]."""
    shape = img.shape[:2]
    t = _curve(-1, 1, 32)
    w, my = style.mouth_w * (1 - 0.12 * opening), style.mouth_y
    gap = 0.5 * style.max_open * opening * (1 - t**2) ** 0.8
    bow = 0.012 * np.exp(-((t / 0.15) ** 2))  # cupid's bow dip
    upper = my - gap - (0.05 * (1 - t**2) ** 0.6 - bow)
    lower = my + gap + 0.07 * (1 - t**2) ** 0.6
    u = t * w
    outer = head.project(np.r_[u, u[::-1]], np.r_[upper, lower[::-1]], lift=0.03)
    _paint(img, _mask(shape, [outer]), style.lips)
    if opening > 0.02:
        inner_pts = head.project(
            np.r_[u * 0.9, u[::-1] * 0.9], np.r_[my - gap, (my + gap)[::-1]], lift=0.03
        )
        inner = _mask(shape, [inner_pts])
        _paint(img, inner, (60, 15, 20))
        teeth = head.project(
            np.r_[u * 0.7, u[::-1] * 0.7],
            np.r_[my - gap - 0.02, np.full_like(u, my - gap.max() + 0.05)],
            lift=0.03,
        )
        _paint(img, inner * _mask(shape, [teeth]), (235, 232, 220))
    if opening <= 0.02:  # closed: only the line between the lips
        mid = head.project(u * 0.92, np.full_like(u, my), lift=0.03)
        line = np.zeros(shape, np.uint8)
        cv2.polylines(
            line,
            [np.round(mid * (1 << _SHIFT)).astype(np.int32)],
            False,
            255,
            max(1, round(img.shape[0] / 128)),
            cv2.LINE_AA,
            _SHIFT,
        )
        _paint(img, line.astype(np.float32) / 255, np.array(style.lips) * 0.45, 0.8)
    return np.array([*outer.min(0), *outer.max(0)], np.float32)


def _draw_hair(img: np.ndarray, head: _Head, style: FaceStyle, *, front: bool) -> None:
    """Hair behind the head (``front=False``) or the fringe over the forehead (``front=True``)."""
    shape, hair = img.shape[:2], np.array(style.hair)
    if style.hair_style == "bald":
        return
    if not front:
        if style.hair_style == "long":
            t = _curve(-1, 1, 16)
            u = np.r_[-1.18, t * 1.25, 1.18]
            v = np.r_[0.0, 1.05 + 0.08 * np.cos(t * 3), 0.0]
            _paint(img, _mask(shape, [head.project(u, v, z=np.full_like(u, -0.3))]), hair * 0.85)
        if style.hair_style == "bun":
            ang = np.linspace(0, 2 * np.pi, 24, endpoint=False)
            bun = head.project(0.32 * np.cos(ang), -1.12 + 0.25 * np.sin(ang), z=np.full(24, -0.2))
            _paint(img, _mask(shape, [bun]), hair * 0.9)
        cap = _mask(shape, [head.silhouette(1.1, 1.08, 1.1, dv=-0.06)])
        if style.hair_style != "long":  # short hair: no rim of hair around the cheeks and jaw
            cap *= _above(head, np.linspace(-1.5, 1.5, 2), np.full(2, -0.1), shape)
        _paint(img, cap, hair)
        return
    u = _curve(-1, 1, 40)
    v = style.hairline + style.hairline_curve * u**2
    inside = u**2 + v**2 < 0.995
    u, v = u[inside], v[inside]
    if u.size < 2:
        return
    region = _above(head, u, v, shape) * _mask(shape, [head.silhouette(1.1, 1.08, 1.1, dv=-0.06)])
    _paint(img, region, hair)


def _above(head: _Head, u: np.ndarray, v: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """Coverage of the image region above the head-surface curve (u, v), extended sideways."""
    line = head.project(u, v)
    right, up = head.rot[:2, 0], -head.rot[:2, 1]
    far = 3.0 * head.b
    poly = np.vstack(
        [
            line,
            line[-1] + right * far,
            line[-1] + (right + up) * far,
            line[0] + (up - right) * far,
            line[0] - right * far,
        ]
    )
    return _mask(shape, [poly])


def _draw_body(img: np.ndarray, head: _Head, style: FaceStyle, size: int) -> None:
    shape, skin = img.shape[:2], np.array(style.skin)
    base_x, base_y = head.center[0] * 0.6 + 0.2 * size, head.center[1] + 2.4 * head.b
    neck_w = 0.55 * head.a
    neck = np.array(
        [
            [head.center[0] - neck_w, head.center[1] + 0.5 * head.b],
            [head.center[0] + neck_w, head.center[1] + 0.5 * head.b],
            [base_x + neck_w * 1.1, base_y],
            [base_x - neck_w * 1.1, base_y],
        ]
    )
    _paint(img, _mask(shape, [neck]), skin * 0.78)
    ang = np.linspace(0, 2 * np.pi, 48, endpoint=False)
    torso = np.stack(
        [base_x + 2.6 * head.a * np.cos(ang), base_y + 0.2 * head.b + 1.1 * head.b * np.sin(ang)], 1
    )
    _paint(img, _mask(shape, [torso]), style.clothes)


def _draw_ears(img: np.ndarray, head: _Head, style: FaceStyle) -> None:
    ang = np.linspace(0, 2 * np.pi, 20, endpoint=False)
    for side in (-1, 1):
        u = side * (0.98 + 0.06 * (1 + np.cos(ang)))
        ear = head.project(u, 0.02 + 0.2 * np.sin(ang), z=np.full(20, -0.05))
        _paint(img, _mask(img.shape[:2], [ear]), np.array(style.skin) * 0.9)


def render_frame(
    style: FaceStyle, state: FrameState, background: np.ndarray, zoom: float = 1.0
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Draw one frame.

    Args:
        style: the person.
        state: pose, eye and mouth of this frame.
        background: (S, S, 3) float32 from ``render_background``.
        zoom: camera framing; 1 = the face spans about 40% of the frame width, 1.5 about 60%
            (a tight talking-head crop). It changes pixels only: pose and eye ratios stay the same.

    Returns:
        frame: (S, S, 3) uint8 RGB; eye: (2,) [left, right] openness ratios;
        bbox: (6,) face box [x_min, x_max, y_min, y_max, H, W]; mouth_box: (4,) [x0, y0, x1, y1].
    """
    size = background.shape[0]
    img = background.copy()
    head = _Head(style, state, size, zoom)
    _draw_body(img, head, style, size)
    _draw_hair(img, head, style, front=False)
    _draw_ears(img, head, style)
    outline = head.silhouette()
    face = _mask(img.shape[:2], [outline])
    # Shading: darker towards the rim, lit from the upper left (a cue for the head's 3-D shape).
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    d = np.stack([xx - head.center[0], yy - head.center[1]], -1)
    cov = (head.rot @ np.diag([head.a**2, head.b**2, head.c**2]) @ head.rot.T)[:2, :2]
    q = np.einsum("hwi,ij,hwj->hw", d, np.linalg.inv(cov).astype(np.float32), d)
    light = (
        1.0 - 0.22 * np.clip(q, 0, 1) ** 1.5 - 0.06 * (d[..., 0] + d[..., 1]) / (head.a + head.b)
    )
    _paint(img, face, np.array(style.skin, np.float32) * light[..., None])
    _draw_hair(img, head, style, front=True)
    eye = np.array(
        [
            _draw_eye(img, head, style, state, side, style.eye_ratio[i])
            for i, side in enumerate((1, -1))
        ],
        np.float32,
    )
    for side in (-1, 1):
        _draw_brow(img, head, style, side)
    _draw_nose(img, head, style)
    mouth_box = _draw_mouth(img, head, style, state.mouth_open)
    lo, hi = np.floor(outline.min(0)), np.ceil(outline.max(0))
    bbox = np.array([lo[0], hi[0], lo[1], hi[1], size, size], np.float32)
    frame = np.clip(np.round(img), 0, 255).astype(np.uint8)
    return frame, eye, bbox, mouth_box
