"""DiffTalk preparation on a real photo with the project's face backend (FaceBoxes + 3DDFA_V2)."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest

from talkinghead.difftalk.configs import DiffTalkOptions
from talkinghead.difftalk.geometry import JAW_POLYGON
from talkinghead.difftalk.model_dir import save_model_dir
from talkinghead.difftalk.pipeline import DiffTalkPipeline
from talkinghead.difftalk.prepare import AnalyzerBackend
from talkinghead.face.analysis import FaceAnalyzer

from .conftest import tiny_modules

PORTRAIT = "portraits/real_female_1.jpeg"


@pytest.fixture(scope="module")
def pipe(media_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> DiffTalkPipeline:
    modules = tiny_modules()
    modules.config = dataclasses.replace(modules.config, image_size=256)  # official crop size
    model_dir = save_model_dir(modules, tmp_path_factory.mktemp("dt") / "tiny-256")
    return DiffTalkPipeline.from_pretrained(model_dir, face3d_dir=media_dir / "face3d")


def test_masks_and_landmarks_on_a_real_face(pipe: DiffTalkPipeline, media_dir: Path) -> None:
    prepared = pipe.prepare(media_dir / PORTRAIT)
    assert prepared.is_still and prepared.has_face.tolist() == [True]
    points = prepared.landmarks[0]  # crop pixels of the 256-px crop
    assert points[30, 1] < points[33, 1] < points[51, 1] < points[57, 1] < points[8, 1]
    assert points[36:48, 1].max() < points[30, 1], "eyes above the nose tip"
    mask = prepared.masks[0, 0].numpy()  # (64, 64), 1 keep, 0 generate
    cells = (points / 4).astype(int)
    assert all(mask[y, x] == 0 for x, y in cells[48:68]), "the whole mouth is regenerated"
    assert all(mask[y, x] == 1 for x, y in cells[17:27]), "brows are kept"
    assert all(mask[y, x] == 1 for x, y in cells[36:48]), "eyes are kept"
    assert 0.05 < (mask == 0).mean() < 0.35
    assert prepared.reference_latent.shape == (1, 3, 64, 64)


def test_only_the_lower_face_of_the_photo_changes(pipe: DiffTalkPipeline, media_dir: Path) -> None:
    prepared = pipe.prepare(media_dir / PORTRAIT)
    speech = (0.3 * np.sin(np.arange(1600) / 7)).astype(np.float32)
    out = np.concatenate(list(pipe(prepared, speech, DiffTalkOptions(seed=0, num_steps=1)).frames))
    original = prepared.frames[0]
    assert out.shape == (2, *original.shape)
    changed_rows = np.flatnonzero((out[0] != original).any(axis=(1, 2)))
    x0, y0, x1, _ = prepared.crop_boxes[0]
    jaw_top = y0 + prepared.landmarks[0][list(JAW_POLYGON), 1].min() * (x1 - x0) / 256
    # the paste mask is the jaw polygon dilated by 4 % of the crop and blurred (sigma 2 %)
    assert changed_rows.size and changed_rows.min() >= jaw_top - 0.1 * (x1 - x0)
    assert changed_rows.min() > original.shape[0] / 2 - 0.1 * original.shape[0]


def test_landmarks_need_the_3ddfa_assets(media_dir: Path) -> None:
    backend = AnalyzerBackend(FaceAnalyzer(None))
    with pytest.raises(ValueError, match="needs 68-point face landmarks"):
        backend.landmarks(np.zeros((64, 64, 3), np.uint8), np.array([0, 0, 63, 63, 1.0]))


def test_faces_in_small_frames_are_found(media_dir: Path) -> None:
    from talkinghead.data.synth.clips import synthesize_clip

    # a 64-px synthetic clip whose face FaceBoxes finds in 15 of 25 frames at its own size
    frames = synthesize_clip((0, 3), 1.0, 64, voice="formant", zoom=1.5).frames
    backend = AnalyzerBackend(FaceAnalyzer(media_dir / "face3d"))
    boxes = [backend.detect(f) for f in frames]
    assert all(len(b) for b in boxes)
    x0, y0, x1, y1 = boxes[0][0][:4]
    assert 0 <= x0 < 20 and 44 < x1 <= 64 and y1 - y0 > 30, "boxes in the frame's own pixels"
