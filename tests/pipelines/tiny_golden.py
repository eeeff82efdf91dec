"""The tiny-pipeline golden slice: one end-to-end generation whose strided samples are committed.

``run_tiny_golden`` builds the pipeline of ``talkinghead generate --preset tiny``
(``cli.generate.random_pipeline``: ``random_modules`` of the tiny preset, seed 0, log-mel audio, no
HuBERT) and generates 1.2 s of the packaged demo speech on the CPU with a fixed seed. The portrait is
the packaged demo portrait, edge-padded off-centre into a 96 x 112 image; the detector is replaced by
its known face box (so no OpenCV cascade decides the box; the analyzer's own crop and face-location
bbox code runs). The face crop, the face-location bbox, PBNet's pose and blink deltas, the UNet's
DDIM sampling and the LFG decode all feed the sampled values, so a change in the glue between them
changes the numbers even when every shape still holds.

``tests/fixtures/tiny_pipeline_golden.json`` holds the expected values; only
``scripts/update_golden.py`` writes it (after a deliberate change of behaviour).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from talkinghead.cli.generate import random_pipeline
from talkinghead.dawn.configs import GenerateOptions
from talkinghead.demo import DEMO_DIR, FACE_FILE, PORTRAIT, SPEECH, KnownFace
from talkinghead.face.analysis import FaceAnalyzer
from talkinghead.media.audio import load_audio
from talkinghead.media.image import load_portrait

SECONDS = 1.2  # 30 frames at 25 fps
OPTIONS = GenerateOptions(num_steps=3, seed=0, decode_batch=8)
FRAME_STRIDE, PIXEL_STRIDE = 7, 5  # frames 0, 7, 14, 21, 28; pixels 0, 5, ..., 30 of 32

# Tolerances: frames are uint8 after ~40 float32 layers and 3 DDIM steps; another CPU's kernels
# (AVX2 vs AVX-512 reductions) move a pixel by at most a level or two, while a glue change moves
# most sampled pixels by tens of levels. Motion is PBNet in float32 (bit-identical on the recording
# machine); 1e-4 absolute covers other BLAS builds.
FRAME_ATOL = 3  # 8-bit levels, any sampled pixel
FRAME_MEAN_ATOL = 0.5  # mean |difference| over the sampled pixels
MOTION_ATOL = 1e-4


PAD = ((8, 24), (30, 18), (0, 0))  # (top, bottom), (left, right): the face is off-centre


class _KnownBoxAnalyzer(FaceAnalyzer):
    """The weight-free FaceAnalyzer with its detector replaced by one known box."""

    def __init__(self, box: np.ndarray) -> None:
        super().__init__(None)
        self.box = box

    def detect(self, image_rgb: np.ndarray) -> np.ndarray:
        return self.box[None]


def run_tiny_golden() -> dict[str, Any]:
    """Generate the golden clip; returns JSON-ready strided samples (a few hundred numbers)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # the thread count changes the float32 reduction order
    try:
        return _generate()
    finally:
        torch.set_num_threads(threads)


def _generate() -> dict[str, Any]:
    portrait = np.pad(load_portrait(DEMO_DIR / PORTRAIT), PAD, mode="edge")
    box = KnownFace.from_json(DEMO_DIR / FACE_FILE).state.box.copy()
    box[[0, 2]] += PAD[1][0]
    box[[1, 3]] += PAD[0][0]
    pipe = random_pipeline("tiny", "cpu", None, torch.float32)  # what --preset tiny builds
    pipe.face_analyzer = _KnownBoxAnalyzer(box)
    audio = load_audio(DEMO_DIR / SPEECH)[: int(SECONDS * 16000)]
    result = pipe(portrait, audio, OPTIONS)
    frames = np.concatenate(list(result.frames))
    motion = result.motion
    sampled = frames[::FRAME_STRIDE, ::PIXEL_STRIDE, ::PIXEL_STRIDE]
    return {
        "num_frames": int(result.num_frames),
        "frame_shape": list(frames.shape),
        "crop_box": [int(v) for v in result.prepared.face.crop_box],
        "bbox_crop": [int(v) for v in result.prepared.face.bbox_crop],
        "frames": sampled.astype(int).tolist(),  # (5, 7, 7, 3)
        "pose_delta": np.round(motion.pose_delta[::3], 6).tolist(),  # (10, 6)
        "eye_delta": np.round(motion.eye_delta[::3], 6).tolist(),  # (10, 2)
        "frame_mean": round(float(frames.mean()), 4),
    }
