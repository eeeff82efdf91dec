"""VideoWriter (streamed H.264 + AAC, atomic output), read_video_frames, video_fps, probe_video."""

from __future__ import annotations

import wave
from pathlib import Path

import numpy as np
import pytest

from talkinghead.media.audio import AudioError
from talkinghead.media.video import (
    VideoError,
    VideoWriter,
    probe_video,
    read_video_frames,
    video_fps,
)


@pytest.fixture(scope="module")
def speech_wav(media_dir: Path) -> Path:
    return media_dir / "audio" / "WRA_MarcoRubio_000.wav"


def _random_frames(n: int, h: int = 64, w: int = 48, seed: int = 0) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [rng.integers(0, 256, (h, w, 3), dtype=np.uint8) for _ in range(n)]


def _smooth_frame(h: int = 64, w: int = 64) -> np.ndarray:
    """A red-dominant gradient: compresses well, so decoding should return it nearly unchanged."""
    y, x = np.mgrid[0:h, 0:w]
    return np.stack([200 + 0 * x, 2 * x, 2 * y], axis=-1).astype(np.uint8)


def test_write_50_frames_with_audio(tmp_path: Path, speech_wav: Path) -> None:
    out = tmp_path / "out.mp4"
    with VideoWriter(out, audio_path=speech_wav, fps=25) as writer:
        for frame in _random_frames(50):
            writer.write(frame)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.mp4"]  # no temp file left

    info = probe_video(out)
    assert info["num_frames"] == 50
    assert info["fps"] == 25.0 and video_fps(out) == 25.0
    assert info["video_codec"] == "h264"
    assert (info["height"], info["width"]) == (64, 48)
    assert abs(info["duration"] - 2.0) < 1e-6
    assert info["has_audio"] and info["audio_codec"] == "aac"
    # The 21 s source audio is trimmed to the 2 s of video.
    assert abs(info["audio_duration"] - 2.0) <= 0.1

    frames = list(read_video_frames(out))
    assert len(frames) == 50
    assert all(f.shape == (64, 48, 3) and f.dtype == np.uint8 for f in frames)


def test_frames_round_trip_in_rgb_order(tmp_path: Path) -> None:
    out = tmp_path / "smooth.mp4"
    frame = _smooth_frame()
    with VideoWriter(out, crf=10) as writer:
        for _ in range(5):
            writer.write(frame)
    decoded = next(read_video_frames(out))
    error = np.abs(decoded.astype(np.int16) - frame.astype(np.int16))
    assert error.mean() < 2.0 and error.max() <= 12, (error.mean(), error.max())
    assert not probe_video(out)["has_audio"]
    assert probe_video(out)["audio_duration"] is None


@pytest.mark.parametrize("error", [RuntimeError, KeyboardInterrupt])
def test_failure_inside_with_leaves_no_file(
    tmp_path: Path, speech_wav: Path, error: type[BaseException]
) -> None:
    out = tmp_path / "out.mp4"
    with pytest.raises(error), VideoWriter(out, audio_path=speech_wav) as writer:
        for i, frame in enumerate(_random_frames(10)):
            writer.write(frame)
            if i == 5:
                raise error("stop")
    assert list(tmp_path.iterdir()) == []


def test_failure_keeps_an_existing_output_untouched(tmp_path: Path) -> None:
    out = tmp_path / "out.mp4"
    out.write_bytes(b"previous result")
    with pytest.raises(ValueError, match="uint8"), VideoWriter(out) as writer:
        writer.write(np.zeros((16, 16, 3), np.float32))
    assert out.read_bytes() == b"previous result"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.mp4"]


def test_no_frames_is_an_error(tmp_path: Path) -> None:
    out = tmp_path / "empty.mp4"
    with pytest.raises(VideoError, match="no frames"), VideoWriter(out):
        pass
    assert list(tmp_path.iterdir()) == []


def test_bad_audio_fails_before_any_frame(tmp_path: Path) -> None:
    out = tmp_path / "out.mp4"
    with pytest.raises(AudioError, match="not found"):
        VideoWriter(out, audio_path=tmp_path / "missing.wav")
    (tmp_path / "junk.m4a").write_bytes(b"\x00not audio" * 100)
    with pytest.raises(AudioError, match="could not decode"):
        VideoWriter(out, audio_path=tmp_path / "junk.m4a")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["junk.m4a"]


def test_odd_sizes_padded_or_rejected(tmp_path: Path) -> None:
    out = tmp_path / "odd.mp4"
    with VideoWriter(out) as writer:
        for frame in _random_frames(3, h=33, w=31):
            writer.write(frame)
    info = probe_video(out)
    assert (info["height"], info["width"]) == (34, 32) and info["num_frames"] == 3

    odd_writer = VideoWriter(tmp_path / "odd2.mp4", pad_to_even=False)
    with pytest.raises(VideoError, match="even"), odd_writer:
        odd_writer.write(_random_frames(1, h=33, w=32)[0])
    assert not (tmp_path / "odd2.mp4").exists()


def test_frame_size_must_not_change(tmp_path: Path) -> None:
    writer = VideoWriter(tmp_path / "x.mp4")
    with pytest.raises(ValueError, match="differs from the first frame"), writer:
        writer.write(np.zeros((16, 16, 3), np.uint8))
        writer.write(np.zeros((16, 32, 3), np.uint8))
    assert list(tmp_path.iterdir()) == []


def test_shorter_audio_and_other_rate(tmp_path: Path) -> None:
    wav = tmp_path / "tone.wav"
    t = np.arange(22050) / 22050  # 1 s at 22.05 kHz
    with wave.open(str(wav), "wb") as f:
        f.setnchannels(1)
        f.setsampwidth(2)
        f.setframerate(22050)
        f.writeframes((0.3 * np.sin(2 * np.pi * 300 * t) * 32767).astype("<i2").tobytes())
    out = tmp_path / "out.mkv"
    with VideoWriter(out, audio_path=wav, fps=30) as writer:
        for frame in _random_frames(60, h=16, w=16):
            writer.write(frame)
    info = probe_video(out)
    assert info["num_frames"] == 60 and info["fps"] == 30.0
    assert info["audio_sample_rate"] == 22050 and info["has_audio"]


def test_readers_raise_clear_errors(tmp_path: Path) -> None:
    with pytest.raises(VideoError, match="not found"):
        probe_video(tmp_path / "missing.mp4")
    (tmp_path / "junk.mp4").write_bytes(b"junk" * 100)
    with pytest.raises(VideoError, match="could not decode"):
        next(read_video_frames(tmp_path / "junk.mp4"))
    with pytest.raises(VideoError, match="directory does not exist"):
        VideoWriter(tmp_path / "nope" / "out.mp4")
