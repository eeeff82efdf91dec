"""DiffTalk test fixtures: a tiny random model, a known 68-point face and a fake face backend."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from talkinghead.difftalk.conditioning import ConditionEncoder
from talkinghead.difftalk.configs import PRESETS
from talkinghead.difftalk.model_dir import DiffTalkModules
from talkinghead.difftalk.networks import build_denoiser, build_first_stage


def face_landmarks(cx: float, cy: float, scale: float) -> np.ndarray:
    """A frontal iBUG 68-point face centred at (cx, cy), ``scale`` = half face width in pixels.

    Jaw 0-16 on a half ellipse from ear to ear through the chin, brows 17-26, nose 27-35 (30 tip,
    33 base), eyes 36-47, outer lips 48-59, inner lips 60-67; y grows downwards.
    """
    t = np.linspace(0, 1, 17)
    jaw = np.stack([-np.cos(np.pi * t), -0.3 + 1.1 * np.sin(np.pi * t)], 1)
    brows = np.stack(
        [np.r_[np.linspace(-0.8, -0.1, 5), np.linspace(0.1, 0.8, 5)], np.full(10, -0.55)], 1
    )
    bridge = np.stack([np.zeros(4), np.linspace(-0.35, 0.05, 4)], 1)
    base = np.stack([np.linspace(-0.2, 0.2, 5), np.full(5, 0.15)], 1)
    ring = np.linspace(0, 2 * np.pi, 6, endpoint=False)
    eyes = [np.stack([x + 0.15 * np.cos(ring), -0.3 + 0.06 * np.sin(ring)], 1) for x in (-0.4, 0.4)]
    outer = np.linspace(0, 2 * np.pi, 12, endpoint=False)
    inner = np.linspace(0, 2 * np.pi, 8, endpoint=False)
    lips = np.stack([-0.35 * np.cos(outer), 0.45 + 0.12 * np.sin(outer)], 1)
    inside = np.stack([-0.25 * np.cos(inner), 0.45 + 0.05 * np.sin(inner)], 1)
    unit = np.concatenate([jaw, brows, bridge, base, *eyes, lips, inside])
    assert unit.shape == (68, 2)
    return unit * scale + np.array([cx, cy])


class FakeFaceBackend:
    """Finds the template face in frames whose top-left pixel is not black; no face otherwise."""

    def __init__(self, cx: float, cy: float, scale: float):
        self.points = face_landmarks(cx, cy, scale)
        self.calls = 0

    def detect(self, image_rgb: np.ndarray) -> np.ndarray:
        self.calls += 1
        if image_rgb[0, 0].max() == 0:
            return np.zeros((0, 5))
        x0, y0 = self.points.min(0)
        x1, y1 = self.points.max(0)
        return np.array([[x0, y0 - 0.3 * (y1 - y0), x1, y1, 0.99]])

    def landmarks(self, image_rgb: np.ndarray, box: np.ndarray) -> np.ndarray:
        return self.points.copy()


def tiny_modules(seed: int = 0) -> DiffTalkModules:
    cfg = PRESETS["tiny"]
    torch.manual_seed(seed)
    return DiffTalkModules(
        config=cfg,
        first_stage=build_first_stage(cfg.first_stage).eval(),
        unet=build_denoiser(cfg.denoiser).eval(),
        condition=ConditionEncoder(cfg.condition).eval(),
    )


@pytest.fixture
def make_modules():
    """``make_modules(seed=0)`` -> a fresh tiny DiffTalk with random weights."""
    return tiny_modules


@pytest.fixture
def make_video():
    """``make_video(num, height, width, faceless)`` -> frames for ``FakeFaceBackend``."""
    return face_video


@pytest.fixture
def backend() -> FakeFaceBackend:
    """The template face at (48, 34), half width 20 px, in 72 x 96 frames."""
    return FakeFaceBackend(48.0, 34.0, 20.0)


def face_video(
    num: int, height: int = 72, width: int = 96, faceless: tuple[int, ...] = ()
) -> np.ndarray:
    """(num, H, W, 3) uint8 frames with texture; frames in ``faceless`` get a black top-left pixel."""
    rng = np.random.default_rng(0)
    frames = rng.integers(30, 220, (num, height, width, 3), dtype=np.uint8)
    for i in faceless:
        frames[i, 0, 0] = 0
    return frames
