"""Reading videos and their audio for evaluation (PyAV), plus frame-rate resampling.

Kept local to ``eval`` so the metrics can score videos made anywhere. Unreadable files raise
``UnreadableVideoError`` so a directory run can skip and list them instead of stopping.
"""

from __future__ import annotations

from pathlib import Path

import av
import numpy as np

VIDEO_SUFFIXES = (".mp4", ".avi", ".mov", ".mkv", ".webm")


class UnreadableVideoError(ValueError):
    """A video file that PyAV cannot decode (or that has no frames)."""


def read_video(path: str | Path) -> tuple[np.ndarray, float]:
    """All frames of ``path`` as uint8 RGB (T, H, W, 3) and the frame rate in frames/s."""
    try:
        with av.open(str(path)) as container:
            if not container.streams.video:
                raise UnreadableVideoError(f"{path}: no video stream")
            stream = container.streams.video[0]
            fps = float(stream.average_rate or stream.guessed_rate or 25)
            frames = [f.to_ndarray(format="rgb24") for f in container.decode(stream)]
    except (av.error.FFmpegError, OSError) as err:
        raise UnreadableVideoError(f"{path}: cannot decode ({err})") from err
    if not frames:
        raise UnreadableVideoError(f"{path}: no decodable frames")
    return np.stack(frames), fps


def read_audio(path: str | Path, sample_rate: int = 16000) -> np.ndarray | None:
    """Mono float32 waveform (S,) in [-1, 1] resampled to ``sample_rate``; None without audio."""
    try:
        with av.open(str(path)) as container:
            if not container.streams.audio:
                return None
            resampler = av.AudioResampler(format="s16", layout="mono", rate=sample_rate)
            chunks = []
            for frame in container.decode(container.streams.audio[0]):
                for out in resampler.resample(frame):
                    chunks.append(out.to_ndarray().reshape(-1))
            for out in resampler.resample(None):
                chunks.append(out.to_ndarray().reshape(-1))
    except (av.error.FFmpegError, OSError) as err:
        raise UnreadableVideoError(f"{path}: cannot decode audio ({err})") from err
    if not chunks:
        return None
    return np.concatenate(chunks).astype(np.float32) / 32768.0


def resample_frames(frames: np.ndarray, fps: float, target_fps: float) -> np.ndarray:
    """Nearest-frame resampling (T, ...) -> (round(T * target / fps), ...); SyncNet needs 25 fps."""
    if abs(fps - target_fps) < 1e-3:
        return frames
    n = max(1, round(len(frames) * target_fps / fps))
    idx = np.minimum((np.arange(n) * fps / target_fps).round().astype(int), len(frames) - 1)
    return frames[idx]


def list_videos(directory: str | Path) -> list[Path]:
    """Video files directly inside ``directory``, sorted by name."""
    directory = Path(directory)
    if not directory.is_dir():
        raise ValueError(f"not a directory: {directory}")
    return sorted(p for p in directory.iterdir() if p.suffix.lower() in VIDEO_SUFFIXES)
