"""DawnPipeline end to end on the tiny random model: frame count and format, seeding,
still head, pose drivers from .npy files and from a driving video."""

from __future__ import annotations

import math
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from talkinghead.dawn.configs import GenerateOptions
from talkinghead.dawn.driving import motion_from_video
from talkinghead.dawn.pipeline import DawnPipeline
from talkinghead.face.analysis import NEUTRAL_POSE, FaceNotFoundError
from talkinghead.media.video import VideoWriter
from talkinghead.pipelines.base import GenerationResult

from .conftest import CLIP_SECONDS

NUM_FRAMES = math.floor(CLIP_SECONDS * 25)
FAST = GenerateOptions(num_steps=2, seed=0, decode_batch=8)


@pytest.fixture(scope="module")
def pipeline(tiny_model_dir: Path) -> DawnPipeline:
    return DawnPipeline.from_pretrained(tiny_model_dir)


def frames_of(result: GenerationResult) -> np.ndarray:
    assert result.frames is not None
    return np.concatenate(list(result.frames))


@pytest.fixture(scope="module")
def seed0(pipeline: DawnPipeline, portrait: Path, speech_wav: Path):
    result = pipeline(portrait, speech_wav, options=FAST)
    return result, frames_of(result)


def test_frames_are_uint8_squares_one_per_video_frame(seed0) -> None:
    result, frames = seed0
    assert result.num_frames == NUM_FRAMES == 30
    assert frames.shape == (NUM_FRAMES, 32, 32, 3)
    assert frames.dtype == np.uint8
    assert result.fps == 25 and result.seed == 0
    assert result.motion.pose.shape == result.motion.pose_delta.shape == (NUM_FRAMES, 6)
    assert result.motion.eye.shape == result.motion.eye_delta.shape == (NUM_FRAMES, 2)
    assert result.prepared.image.shape == (32, 32, 3)
    assert result.prepared.face.detector == "faceboxes"  # face3d was found beside the model


def test_same_seed_same_frames_other_seed_differs(
    pipeline: DawnPipeline, portrait: Path, speech_wav: Path, seed0
) -> None:
    _, first = seed0
    again = frames_of(pipeline(portrait, speech_wav, options=FAST))
    np.testing.assert_array_equal(again, first)
    other = pipeline(portrait, speech_wav, options=replace(FAST, seed=1)
    )
    assert not np.array_equal(frames_of(other), first)


def test_still_head_has_zero_pose_delta(
    pipeline: DawnPipeline, portrait: Path, speech_wav: Path
) -> None:
    result = pipeline(portrait, speech_wav,
        options=replace(FAST, motion_scale=0.0, num_steps=1),
    )
    assert not result.motion.pose_delta.any()
    np.testing.assert_array_equal(
        result.motion.pose,
        np.repeat(result.prepared.face.pose[None].astype(np.float32), NUM_FRAMES, axis=0),
    )
    assert result.motion.eye_delta.any()  # blinks still come from PBNet


def test_pose_npy_driver_is_followed(
    pipeline: DawnPipeline, portrait: Path, speech_wav: Path, tmp_path: Path
) -> None:
    rng = np.random.default_rng(0)
    driver = (rng.standard_normal((NUM_FRAMES - 5, 6)) * [5, 5, 5, 1e-5, 3, 3]).astype(np.float32)
    np.save(tmp_path / "pose.npy", driver)
    blink = rng.uniform(0.1, 0.4, (NUM_FRAMES, 2)).astype(np.float32)
    result = pipeline(portrait, speech_wav,
        options=replace(FAST, num_steps=1),
        pose=tmp_path / "pose.npy",
        blink=blink,
    )
    # a short driver holds its last frame
    held = driver[np.minimum(np.arange(NUM_FRAMES), len(driver) - 1)]
    np.testing.assert_allclose(result.motion.pose_delta, held - driver[0], atol=1e-6)
    np.testing.assert_allclose(result.motion.eye_delta, blink - blink[0], atol=1e-6)
    init = result.prepared.face.pose.astype(np.float32)
    np.testing.assert_allclose(result.motion.pose, init + held - driver[0], atol=1e-4)


def test_bad_pose_file_is_refused(
    pipeline: DawnPipeline, portrait: Path, speech_wav: Path, tmp_path: Path
) -> None:
    np.save(tmp_path / "pose.npy", np.zeros((10, 3), np.float32))
    with pytest.raises(ValueError, match=r"must hold an \(F, 6\) array"):
        pipeline(portrait, speech_wav,
            options=FAST,
            pose=tmp_path / "pose.npy",
        )


def test_driving_video_gives_the_motion(
    pipeline: DawnPipeline, portrait: Path, speech_wav: Path, tmp_path: Path
) -> None:
    # a small portrait moving right and growing: 5 frames, fewer than the audio's 30
    base = Image.open(portrait).convert("RGB")
    video = tmp_path / "driver.mp4"
    with VideoWriter(video, fps=25) as writer:
        for i in range(5):
            canvas = Image.new("RGB", (200, 200), (128, 128, 128))
            side = 150 + 6 * i
            canvas.paste(base.resize((side, side)), (8 * i, 10))
            writer.write(np.asarray(canvas))
    result = pipeline(portrait, speech_wav,
        options=replace(FAST, num_steps=1),
        driving_video=video,
    )
    pose, eye = motion_from_video(pipeline.face_analyzer, video)
    assert pose.shape == (5, 6) and eye.shape == (5, 2)
    held = np.minimum(np.arange(NUM_FRAMES), 4)
    np.testing.assert_allclose(result.motion.pose_delta, pose[held] - pose[0], atol=1e-5)
    np.testing.assert_allclose(result.motion.eye_delta, eye[held] - eye[0], atol=1e-5)
    assert np.abs(result.motion.pose_delta[-1]).max() > 0.1  # the driver's head moved


def test_zero_steps_is_refused(pipeline: DawnPipeline, portrait: Path, speech_wav: Path):
    with pytest.raises(ValueError, match="num_steps=0"):
        pipeline(portrait, speech_wav, options=replace(FAST, num_steps=0))


def test_no_crop_animates_an_image_without_a_face(
    pipeline: DawnPipeline, speech_wav: Path
) -> None:
    grey = np.full((64, 48, 3), 128, np.uint8)
    with pytest.raises(FaceNotFoundError, match="--no-crop"):
        pipeline(grey, speech_wav, options=FAST)
    result = pipeline(grey, speech_wav, options=replace(FAST, crop=False, num_steps=1)
    )
    assert result.prepared.face.detector == "none"
    np.testing.assert_allclose(result.prepared.face.pose, NEUTRAL_POSE)
    np.testing.assert_array_equal(result.prepared.bbox, [0, 48, 0, 64, 64, 48])
