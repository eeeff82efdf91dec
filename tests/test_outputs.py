"""Output files get the permissions an ordinary open() gives (0666 less the umask), and nothing half-written."""

from __future__ import annotations

import os
import stat
from types import SimpleNamespace

import numpy as np
import pytest

from talkinghead import files
from talkinghead.outputs import save_motion, save_result
from talkinghead.pipelines.base import GenerationResult


def _result(num_frames: int = 4) -> GenerationResult:
    frames = np.random.default_rng(0).integers(0, 256, (num_frames, 16, 16, 3), dtype=np.uint8)
    motion = SimpleNamespace(pose=np.zeros((num_frames, 6)), eye=np.full((num_frames, 2), 0.3))
    return GenerationResult(
        frames=iter([frames[:2], frames[2:]]),
        num_frames=num_frames,
        fps=25,
        seed=0,
        prepared=None,
        motion=motion,
    )


@pytest.fixture(params=[0o022, 0o027, 0o002])
def umask(request):
    old = os.umask(request.param)
    yield request.param
    os.umask(old)


def _mode(path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_video_frames_and_motion_have_ordinary_permissions(tmp_path, umask):
    result = _result()
    video, frames = tmp_path / "demo.mp4", tmp_path / "frames"
    assert save_result(result, video, audio_path=None, frames_dir=frames) == 4
    assert _mode(video) == 0o666 & ~umask
    assert _mode(frames) == 0o777 & ~umask
    assert sorted(p.name for p in frames.iterdir()) == [f"{i:06d}.png" for i in range(4)]
    assert all(_mode(p) == 0o666 & ~umask for p in frames.iterdir())
    pose, blink = save_motion(result, tmp_path / "demo")
    assert _mode(pose) == _mode(blink) == 0o666 & ~umask
    assert np.load(blink).shape == (4, 2)
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "demo.blink.npy",
        "demo.mp4",
        "demo.pose.npy",
        "frames",
    ]


def test_failed_save_leaves_nothing(tmp_path):
    def frames():
        yield np.zeros((2, 16, 16, 3), np.uint8)
        raise RuntimeError("interrupted")

    result = GenerationResult(frames=frames(), num_frames=4, fps=25, seed=0, prepared=None)
    with pytest.raises(RuntimeError, match="interrupted"):
        save_result(result, tmp_path / "x.mp4", audio_path=None, frames_dir=tmp_path / "frames")
    assert list(tmp_path.iterdir()) == [] and result.frames is None


def test_atomic_directory_replaces_and_refuses(tmp_path):
    target = tmp_path / "model"
    with files.atomic_directory(target) as tmp:
        (tmp / "a").write_text("1")
    with files.atomic_directory(target) as tmp:
        (tmp / "b").write_text("2")
    assert [p.name for p in target.iterdir()] == ["b"]
    with (
        pytest.raises(FileExistsError, match="already exists"),
        files.atomic_directory(target, replace=False),
    ):
        pass
    assert [p.name for p in tmp_path.iterdir()] == ["model"]
