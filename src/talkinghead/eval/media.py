"""Reading videos and their audio for evaluation, on the project's shared media code.

Frames come from ``data.video.read_video_frames`` / ``video_fps``, audio from
``data.audio.load_audio`` (mono by averaging the channels, float32 at 16 kHz; what
``ffmpeg -ac 1 -ar 16000`` gives syncnet_python up to int16 rounding), and the video suffixes from
``data.video.VIDEO_SUFFIXES``. Eval only adds what a directory run needs: unreadable files raise
``UnreadableVideoError`` so a run can skip and list them instead of stopping, a video without
usable audio gives ``None``, and frame-rate resampling for SyncNet's 25 fps.
"""

from __future__ import annotations

import logging
from pathlib import Path

import av
import numpy as np

from talkinghead.media.audio import HUBERT_SAMPLE_RATE, AudioError, load_audio
from talkinghead.media.video import VIDEO_SUFFIXES, VideoError, read_video_frames, video_fps

logger = logging.getLogger(__name__)


class UnreadableVideoError(ValueError):
    """A video file that cannot be decoded (or that has no frames)."""


def read_video(path: str | Path) -> tuple[np.ndarray, float]:
    """All frames of ``path`` as uint8 RGB (T, H, W, 3) and the frame rate in frames/s."""
    try:
        fps = video_fps(path)
        frames = list(read_video_frames(path))
    except (VideoError, av.FFmpegError, OSError) as err:
        raise UnreadableVideoError(f"{path}: cannot decode ({err})") from err
    if not frames:
        raise UnreadableVideoError(f"{path}: no decodable frames")
    return np.stack(frames), fps


def read_audio(path: str | Path, sample_rate: int = HUBERT_SAMPLE_RATE) -> np.ndarray | None:
    """Mono float32 waveform (S,) in [-1, 1] at ``sample_rate``; None without usable audio.

    "Usable" is what ``load_audio`` accepts: an audio stream that decodes, lasts at least 0.2 s
    and is not silent. Anything else is logged and treated as no audio (the audio metrics then
    say they need audio).
    """
    try:
        return load_audio(path, sample_rate)
    except AudioError as err:
        logger.info("no usable audio: %s", err)
        return None


def resample_frames(frames: np.ndarray, fps: float, target_fps: float) -> np.ndarray:
    """Nearest-frame resampling (T, ...) -> (round(T * target / fps), ...); SyncNet needs 25 fps."""
    if abs(fps - target_fps) < 1e-3:
        return frames
    n = max(1, round(len(frames) * target_fps / fps))
    idx = np.minimum((np.arange(n) * fps / target_fps).round().astype(int), len(frames) - 1)
    return frames[idx]


def list_videos(directory: str | Path) -> list[Path]:
    """Video files (``VIDEO_SUFFIXES``) directly inside ``directory``, sorted by name."""
    directory = Path(directory)
    if not directory.is_dir():
        raise ValueError(f"not a directory: {directory}")
    return sorted(p for p in directory.iterdir() if p.suffix.lower() in VIDEO_SUFFIXES)
