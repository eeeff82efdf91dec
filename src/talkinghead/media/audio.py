"""Audio input: decode any audio (or the audio track of a video) to mono float32 at 16 kHz.

DAWN spec §1.2 steps 1-3: the official pipeline shells out to ``ffmpeg -ar 16000``, reads the
result with soundfile and keeps channel 0 of stereo input. We decode in-process with PyAV (no
system ffmpeg needed), resample with ``av.AudioResampler`` and **average** all channels to mono
(our documented choice: it does not drop a speaker panned to the right channel). The number of
25 fps video frames follows the official truncation ``int(num_samples / sr * fps)``.

Every failure is an :class:`AudioError` (a ``ValueError``) with one clear sentence, raised before
any model runs, so a bad input never costs a full generation (spec §7 item 15).
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

import av
import numpy as np

__all__ = [
    "HUBERT_SAMPLE_RATE",
    "MIN_DURATION_S",
    "SILENCE_PEAK",
    "AudioError",
    "load_audio",
    "num_video_frames",
]

logger = logging.getLogger(__name__)

HUBERT_SAMPLE_RATE = 16000  # Hz; the rate HuBERT was trained on (spec §1.2 step 1)
MIN_DURATION_S = 0.2  # seconds; shorter clips cannot give even a few video frames
SILENCE_PEAK = 1e-4  # peak |amplitude| (full scale = 1) under which a clip counts as silent


class AudioError(ValueError):
    """The audio input cannot be used (missing, undecodable, no audio, empty, too short, silent)."""


def _decode_resampled(path: Path, sample_rate: int) -> np.ndarray:
    """Decode the first audio stream of ``path`` and resample it, channels kept.

    Returns:
        samples: (C, N) float32 at ``sample_rate``.
    """
    try:
        container = av.open(str(path), mode="r")
    except av.FFmpegError as exc:
        raise AudioError(
            f"could not decode {path}: it is corrupt or not an audio/video file ({exc})"
        ) from exc
    with container:
        if not container.streams.audio:
            raise AudioError(f"{path} has no audio stream")
        stream = container.streams.audio[0]
        # The layout is kept (None) so that the downmix is a plain average done below;
        # swresample's own downmix scales stereo by 1/sqrt(2) instead.
        resampler = av.AudioResampler(format="fltp", layout=None, rate=sample_rate)
        chunks: list[np.ndarray] = []
        try:
            for frame in container.decode(stream):
                # Only sample order matters here; container timestamps (sometimes
                # non-monotonic in damaged files) are not needed by the resampler.
                frame.pts = None
                chunks.extend(f.to_ndarray() for f in resampler.resample(frame))
            chunks.extend(f.to_ndarray() for f in resampler.resample(None))
        except av.FFmpegError as exc:
            raise AudioError(
                f"could not decode {path}: the audio stream is corrupt ({exc})"
            ) from exc
    chunks = [c for c in chunks if c.size]
    if not chunks:
        return np.zeros((1, 0), dtype=np.float32)
    channels = {c.shape[0] for c in chunks}
    if len(channels) > 1:
        # A mid-stream layout change: average each chunk on its own before joining.
        return np.concatenate([c.mean(axis=0, keepdims=True) for c in chunks], axis=1)
    return np.concatenate(chunks, axis=1).astype(np.float32, copy=False)


def load_audio(path: str | os.PathLike[str], sample_rate: int = HUBERT_SAMPLE_RATE) -> np.ndarray:
    """Load speech as mono float32 at ``sample_rate``.

    Accepts anything PyAV decodes: wav/mp3/flac/m4a/ogg/... or the audio track of a video file
    (mp4/mov/mkv/webm). Any input rate and channel count; channels are averaged to mono.

    Args:
        path: audio or video file.
        sample_rate: output rate in Hz (16000 for HuBERT).

    Returns:
        audio: (N,) float32, nominally in [-1, 1].

    Raises:
        AudioError: missing file, undecodable/corrupt file, no audio stream, no samples,
            shorter than ``MIN_DURATION_S``, or silent (peak below ``SILENCE_PEAK``).
        ValueError: ``sample_rate`` is not positive.
    """
    if sample_rate <= 0:
        raise ValueError(f"sample_rate={sample_rate} must be a positive number of Hz")
    path = Path(path)
    if not path.is_file():
        raise AudioError(f"audio file not found: {path}")
    if path.stat().st_size == 0:
        raise AudioError(f"audio file is empty (0 bytes): {path}")

    samples = _decode_resampled(path, sample_rate)
    if samples.shape[1] == 0:
        raise AudioError(f"{path} contains no audio samples (the audio stream is empty)")
    audio = samples.mean(axis=0, dtype=np.float32) if samples.shape[0] > 1 else samples[0]
    audio = np.ascontiguousarray(audio, dtype=np.float32)

    duration = audio.shape[0] / sample_rate
    if duration < MIN_DURATION_S:
        raise AudioError(
            f"the audio in {path} is too short: {duration:.3f} s < {MIN_DURATION_S} s minimum"
        )
    peak = float(np.abs(audio).max())
    if not np.isfinite(peak):
        raise AudioError(f"the audio in {path} contains NaN or infinite samples")
    if peak < SILENCE_PEAK:
        raise AudioError(
            f"the audio is silent: peak amplitude {peak:.2e} < {SILENCE_PEAK:g} in {path}"
        )
    logger.debug(
        "loaded %s: %d samples at %d Hz (%.2f s)", path, audio.shape[0], sample_rate, duration
    )
    return audio


def num_video_frames(num_samples: int, sr: int = HUBERT_SAMPLE_RATE, fps: float = 25) -> int:
    """Number of video frames covered by ``num_samples`` audio samples (official truncation).

    Args:
        num_samples: audio length in samples.
        sr: audio rate in Hz.
        fps: video frame rate.

    Returns:
        ``int(num_samples / sr * fps)`` (spec §1.2 step 3).
    """
    if num_samples < 0:
        raise ValueError(f"num_samples={num_samples} must be >= 0")
    if sr <= 0 or fps <= 0:
        raise ValueError(f"sr={sr} and fps={fps} must be positive")
    return int(num_samples / sr * fps)
