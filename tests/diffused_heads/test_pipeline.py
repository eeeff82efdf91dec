"""DiffusedHeadsPipeline end to end on a tiny random model: shapes, seeding, reuse of a prepared
portrait, progress callback, paste-back, saving, and one-sentence errors for bad inputs."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from talkinghead.diffused_heads.options import DiffusedHeadsOptions
from talkinghead.diffused_heads.pipeline import DiffusedHeadsPipeline
from talkinghead.media.audio import AudioError
from talkinghead.outputs import save_result

from .tiny import write_tiny_model_dir

OPTIONS = DiffusedHeadsOptions(num_steps=7, seed=3)


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    return write_tiny_model_dir(tmp_path_factory.mktemp("dh") / "tiny")


@pytest.fixture(scope="module")
def pipe(model_dir, media_dir):
    return DiffusedHeadsPipeline.from_pretrained(model_dir, face3d_dir=media_dir / "face3d")


@pytest.fixture(scope="module")
def portrait(media_dir):
    return media_dir / "portraits" / "real_female_1.jpeg"


def speech(seconds: float = 0.3) -> np.ndarray:
    t = np.arange(int(16000 * seconds)) / 16000
    return (0.3 * np.sin(2 * np.pi * 220 * t) * np.sin(2 * np.pi * 3 * t)).astype(np.float32)


def frames_of(result) -> np.ndarray:
    return np.concatenate(list(result.frames))


def test_generate_shapes_seed_and_callback(pipe, portrait):
    calls = []
    result = pipe(portrait, speech(), OPTIONS, callback=lambda *a: calls.append(a))
    assert result.num_frames == 7 and result.fps == 25 and result.seed == 3
    assert calls == [("audio", 1, 1)]  # nothing sampled before the frames are iterated
    frames = frames_of(result)
    assert frames.shape == (7, 64, 64, 3) and frames.dtype == np.uint8
    assert calls[-1] == ("frames", 49, 49) and len(calls) == 1 + 49
    again = frames_of(pipe(result.prepared, speech(), OPTIONS))  # a prepared portrait is reused
    assert np.array_equal(frames, again)
    other = frames_of(pipe(result.prepared, speech(), DiffusedHeadsOptions(num_steps=7, seed=4)))
    assert not np.array_equal(frames, other)
    g = torch.Generator().manual_seed(3)
    assert np.array_equal(frames, frames_of(pipe(result.prepared, speech(), OPTIONS, generator=g)))


@pytest.mark.parametrize("sampler", ["ddim", "dpmpp-2m"])
def test_fewer_step_options(pipe, portrait, sampler):
    """Fewer-step samplers over the same network: never the default, deterministic, below 7 steps too."""
    assert DiffusedHeadsOptions().sampler == "ancestral"
    prepared = pipe.prepare(portrait)
    options = DiffusedHeadsOptions(num_steps=3, sampler=sampler, seed=3)
    calls = []
    frames = frames_of(pipe(prepared, speech(), options, callback=lambda *a: calls.append(a)))
    assert frames.shape == (7, 64, 64, 3) and calls[-1] == ("frames", 21, 21) and len(calls) == 22
    again = frames_of(
        pipe(prepared, speech(), DiffusedHeadsOptions(num_steps=3, sampler=sampler, seed=3))
    )
    assert np.array_equal(frames, again)


def test_prepare_aligns_the_face(pipe, portrait):
    prepared = pipe.prepare(portrait)
    assert prepared.aligned.shape == (32, 32, 3)
    assert prepared.x_cond.shape == (1, 3, 32, 32)
    assert -1 <= float(prepared.x_cond.min()) and float(prepared.x_cond.max()) <= 1
    squashed = pipe.prepare(portrait, DiffusedHeadsOptions(crop=False))
    assert not np.array_equal(prepared.aligned, squashed.aligned)


def test_paste_back_and_save(pipe, portrait, tmp_path, media_dir):
    options = DiffusedHeadsOptions(num_steps=7, seed=3, paste_back=True)
    result = pipe(portrait, speech(0.2), options)
    frames = frames_of(result)
    assert frames.shape[1:] == result.prepared.original.shape
    audio = media_dir / "audio" / "WRA_MarcoRubio_000.wav"
    result = pipe(result.prepared, speech(0.2), OPTIONS)
    out = tmp_path / "talk.mp4"
    assert save_result(result, out, audio_path=audio) == 5
    assert out.stat().st_size > 0


@pytest.mark.parametrize(
    "options,message",
    [
        (DiffusedHeadsOptions(num_steps=3), "at least 7"),
        (DiffusedHeadsOptions(num_steps=7, fps=30), "25 fps only"),
        (DiffusedHeadsOptions(num_steps=7, sampler="euler"), "must be one of"),
        (DiffusedHeadsOptions(num_steps=7, stabilize=-1), "stabilize"),
    ],
)
def test_bad_options(pipe, portrait, options, message):
    with pytest.raises(ValueError, match=message):
        pipe(portrait, speech(), options)


def test_bad_inputs(pipe, portrait, tmp_path):
    with pytest.raises(AudioError, match="not found"):
        pipe(portrait, tmp_path / "missing.wav", OPTIONS)
    with pytest.raises(ValueError, match="mono"):
        pipe(portrait, np.zeros((2, 8000), np.float32), OPTIONS)
    with pytest.raises(ValueError, match="embeddings must be"):
        pipe(portrait, torch.zeros(5, 3), OPTIONS)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        pipe(tmp_path / "nobody.jpg", speech(), OPTIONS)
    with pytest.raises(ValueError, match="no face found"):
        pipe(np.full((64, 64, 3), 127, np.uint8), speech(), OPTIONS)
