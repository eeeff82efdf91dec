"""DiffTalkPipeline at the tiny preset with a fake face backend: outputs, reuse and bad inputs."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch

from talkinghead.difftalk.configs import DiffTalkOptions
from talkinghead.difftalk.pipeline import DiffTalkPipeline, frame_order
from talkinghead.face.analysis import FaceNotFoundError

OPTIONS = DiffTalkOptions(seed=3, num_steps=2, batch_size=4)
SR = 16000


def _speech(seconds: float) -> np.ndarray:
    t = np.arange(int(seconds * SR)) / SR
    return (0.3 * np.sin(2 * np.pi * 220 * t) * (1 + np.sin(2 * np.pi * 3 * t))).astype(np.float32)


def _frames(result) -> np.ndarray:
    return np.concatenate(list(result.frames))


def test_video_lip_sync(make_modules, make_video, backend) -> None:
    pipe = DiffTalkPipeline(make_modules(), face_backend=backend)
    video = make_video(6, faceless=(2,))
    steps: list[tuple[str, int, int]] = []
    result = pipe(video, _speech(0.4), OPTIONS, callback=lambda *a: steps.append(a))
    frames = _frames(result)
    assert result.num_frames == 10 and frames.shape == (10, 72, 96, 3) and frames.dtype == np.uint8
    assert result.fps == 25 and result.seed == 3 and result.motion is None
    order = frame_order(6, 10, still=False)
    assert order.tolist() == [0, 1, 2, 3, 4, 5, 4, 3, 2, 1]
    assert result.faceless_frames == 2
    for k in np.flatnonzero(order == 2):
        assert np.array_equal(frames[k], video[2]), (
            "a frame without a face passes through unchanged"
        )
    changed = np.flatnonzero(np.abs(frames[0].astype(int) - video[0]).max(-1) > 0)
    assert changed.size > 0
    rows = np.unique(np.flatnonzero((np.abs(frames[0].astype(int) - video[0]).max(-1) > 0).any(1)))
    assert rows.min() >= int(backend.points[2:15, 1].min()) - 4, "only the lower face changes"
    assert ("denoise", 6, 6) in steps and any(s[0] == "encode" for s in steps)


def test_seed_determinism_and_prepared_reuse(make_modules, make_video, backend) -> None:
    pipe = DiffTalkPipeline(make_modules(), face_backend=backend)
    prepared = pipe.prepare(make_video(3), OPTIONS)
    calls = backend.calls
    a = _frames(pipe(prepared, _speech(0.2), OPTIONS))
    b = _frames(pipe(prepared, _speech(0.2), OPTIONS))
    assert backend.calls == calls, "a prepared video is not analysed again"
    assert np.array_equal(a, b)
    c = _frames(pipe(prepared, _speech(0.2), replace(OPTIONS, seed=4)))
    assert not np.array_equal(a, c)
    generator = torch.Generator().manual_seed(3)
    assert np.array_equal(a, _frames(pipe(prepared, _speech(0.2), OPTIONS, generator=generator)))


def test_still_image_and_crops(make_modules, make_video, backend) -> None:
    pipe = DiffTalkPipeline(make_modules(), face_backend=backend)
    result = pipe(make_video(1)[0], _speech(0.2), replace(OPTIONS, paste_back=False))
    frames = _frames(result)
    size = pipe.config.image_size
    assert result.prepared.is_still and frames.shape == (5, size, size, 3)


def test_bad_inputs(make_modules, make_video, backend, tmp_path: Path) -> None:
    pipe = DiffTalkPipeline(make_modules(), face_backend=backend)
    with pytest.raises(ValueError, match="has no frames"):
        pipe.prepare(np.zeros((0, 72, 96, 3), np.uint8))
    with pytest.raises(FaceNotFoundError, match="no face found in any frame"):
        pipe.prepare(make_video(3, faceless=(0, 1, 2)))
    np.save(tmp_path / "ds.npy", np.zeros((7, 16, 80), np.float32))
    with pytest.raises(ValueError, match="has 7 windows but the audio lasts 25 frames"):
        pipe(make_video(2), _speech(1.0), replace(OPTIONS, audio_features=str(tmp_path / "ds.npy")))
    with pytest.raises(ValueError, match="must be in 1..1000"):
        pipe(make_video(2), _speech(0.2), replace(OPTIONS, num_steps=5000))
    with pytest.raises(FileNotFoundError, match="does not exist"):
        pipe.prepare(tmp_path / "missing.mp4")


def test_deepspeech_model_needs_feature_file(
    make_modules, make_video, backend, tmp_path: Path
) -> None:
    modules = make_modules()
    modules.config = replace(modules.config, audio_features="deepspeech")
    pipe = DiffTalkPipeline(modules, face_backend=backend)
    with pytest.raises(ValueError, match="pass --audio-features"):
        pipe(make_video(2), _speech(0.2), OPTIONS)
    channels = modules.config.condition.audio_channels
    np.save(
        tmp_path / "ds.npy",
        np.random.default_rng(0).normal(size=(5, 16, channels)).astype(np.float32),
    )
    result = pipe(
        make_video(2), _speech(0.2), replace(OPTIONS, audio_features=str(tmp_path / "ds.npy"))
    )
    assert _frames(result).shape[0] == 5


def test_video_file_to_mp4_with_audio(make_modules, make_video, backend, tmp_path: Path) -> None:
    from scipy.io import wavfile

    from talkinghead.media.video import VideoWriter, probe_video
    from talkinghead.outputs import save_result

    with VideoWriter(tmp_path / "person.mp4", fps=25) as writer:
        for frame in make_video(4):
            writer.write(frame)
    wavfile.write(tmp_path / "speech.wav", SR, (_speech(0.32) * 32767).astype(np.int16))
    pipe = DiffTalkPipeline(make_modules(), face_backend=backend)
    result = pipe(tmp_path / "person.mp4", tmp_path / "speech.wav", OPTIONS)
    count = save_result(result, tmp_path / "dubbed.mp4", audio_path=tmp_path / "speech.wav")
    info = probe_video(tmp_path / "dubbed.mp4")
    assert count == 8 and info["num_frames"] == 8 and info["has_audio"]
    assert (info["width"], info["height"]) == (96, 72)
