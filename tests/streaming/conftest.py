"""A tiny random DAWN (log-mel, weight-free face fallback), a portrait and its face, speech."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from talkinghead.dawn.configs import PRESETS
from talkinghead.dawn.pipeline import DawnPipeline
from talkinghead.dawn.weights import random_modules
from talkinghead.face.analysis import FaceAnalyzer, FaceState

SAMPLE_RATE = 16000


def speech(seconds: float, seed: int = 0) -> np.ndarray:
    """(N,) float32 amplitude-modulated noise: speech-like energy changes, no files."""
    rng = np.random.default_rng(seed)
    n = int(seconds * SAMPLE_RATE)
    envelope = 0.5 + 0.5 * np.sin(np.arange(n) / SAMPLE_RATE * 2 * np.pi * 3.0)
    return (0.3 * envelope * rng.standard_normal(n)).astype(np.float32)


def face_of(size: int) -> FaceState:
    return FaceState(
        box=np.array([size * 0.25, size * 0.2, size * 0.75, size * 0.8, 1.0]),
        pose=np.array([0.0, 0.0, 0.0, 0.5, size / 2, size / 2]),
        eye=np.array([0.3, 0.3]),
        bbox_crop=np.array([0, size - 1, 0, size - 1, size, size], np.int64),
        crop_box=(0, 0, size, size),
        detector="test",
    )


@pytest.fixture(scope="session")
def tiny_pipe() -> DawnPipeline:
    torch.manual_seed(0)
    cfg = PRESETS["tiny"]
    return DawnPipeline(random_modules(cfg), audio_encoder=None, config=cfg,
                        face_analyzer=FaceAnalyzer(None), audio_features="logmel")


@pytest.fixture(scope="session")
def tiny_portrait(tiny_pipe: DawnPipeline):
    from talkinghead.dawn.configs import GenerateOptions

    image = np.random.default_rng(0).integers(0, 255, (32, 32, 3), dtype=np.uint8)
    return tiny_pipe.prepare(image, GenerateOptions(crop=False), face=face_of(32))
