"""Video output and input with PyAV: streamed H.264 + AAC mp4 writing, frame reading, probing.

DAWN spec §1.4 steps 10-12 write frames with OpenCV's ``mp4v`` codec, cut the original audio with
``pydub.AudioSegment.from_wav`` (so a non-WAV input fails after all the compute) and mux with an
ffmpeg command whose ``-shortest`` and ``-pix_fmt`` are ignored (spec §7 item 15). Here instead:

* frames are encoded as they arrive (libx264, yuv420p, CRF 18): memory does not grow with length;
* the audio of the ORIGINAL file, in any format PyAV decodes, is opened and checked up front, then
  decoded, resampled and AAC-encoded alongside the video, trimmed to the video duration;
* the mp4 is written through ``files.atomic_output`` (a hidden temp file next to the destination,
  moved onto it only after a successful close, with the permissions ``open()`` would give), so an
  exception or Ctrl-C never leaves a half-written output (nor the temp file).
"""

from __future__ import annotations

import logging
import os
import weakref
from collections.abc import Iterator
from fractions import Fraction
from pathlib import Path
from types import TracebackType
from typing import Any

import av
import numpy as np
from torch import Tensor
from typing_extensions import Self

from talkinghead.files import atomic_output
from talkinghead.media.audio import AudioError

__all__ = [
    "VIDEO_SUFFIXES",
    "VideoError",
    "VideoWriter",
    "probe_video",
    "read_video_frames",
    "video_fps",
]

logger = logging.getLogger(__name__)

# File name endings read as videos wherever a folder is searched for them (data, eval).
VIDEO_SUFFIXES = (".mp4", ".mov", ".mkv", ".webm", ".avi", ".m4v")
# Sample rates the AAC encoder accepts; other inputs are resampled to 48 kHz.
_AAC_RATES = (96000, 88200, 64000, 48000, 44100, 32000, 24000, 22050, 16000, 12000, 11025, 8000)
_AAC_FRAME = 1024  # samples per AAC frame
_FRAGMENTED = "frag_keyframe+empty_moov+default_base_moof"  # playable while it is written


class VideoError(ValueError):
    """A video file cannot be read or written as asked."""


def _remove_quietly(path: str) -> None:
    try:
        os.remove(path)
    except FileNotFoundError:
        pass


class _AudioTrack:
    """Decodes the source audio lazily and AAC-encodes it up to a requested sample count."""

    def __init__(self, source: Path) -> None:
        if not source.is_file():
            raise AudioError(f"audio file not found: {source}")
        try:
            self._input = av.open(str(source), mode="r")
        except av.FFmpegError as exc:
            raise AudioError(
                f"could not decode {source}: it is corrupt or not audio ({exc})"
            ) from exc
        if not self._input.streams.audio:
            self._input.close()
            raise AudioError(f"{source} has no audio stream")
        in_stream = self._input.streams.audio[0]
        self.source = source
        self.rate = in_stream.rate if in_stream.rate in _AAC_RATES else 48000
        self.layout = "mono" if in_stream.channels == 1 else "stereo"
        self._resampler = av.AudioResampler(format="fltp", layout=self.layout, rate=self.rate)
        self._decoded = self._input.decode(in_stream)
        self._buffer = np.zeros((1 if self.layout == "mono" else 2, 0), dtype=np.float32)
        self._exhausted = False
        self._written = 0  # samples handed to the encoder
        self.stream: Any = None

    def add_stream(self, container: Any) -> None:
        self.stream = container.add_stream("aac", rate=self.rate, layout=self.layout)

    def _pull(self) -> None:
        """Decode one more source frame into the buffer (or mark the source exhausted)."""
        try:
            frame = next(self._decoded, None)
            if frame is None:
                self._exhausted = True  # resample(None) below flushes the resampler
            else:
                frame.pts = None  # only sample order matters; damaged files have odd timestamps
            frame_list = self._resampler.resample(frame)
        except av.FFmpegError as exc:
            raise AudioError(
                f"could not decode {self.source}: the audio is corrupt ({exc})"
            ) from exc
        chunks = [f.to_ndarray() for f in frame_list]
        if chunks:
            self._buffer = np.concatenate([self._buffer, *chunks], axis=1)

    def _encode(self, samples: np.ndarray, container: Any) -> None:
        frame = av.AudioFrame.from_ndarray(
            np.ascontiguousarray(samples, dtype=np.float32), format="fltp", layout=self.layout
        )
        frame.sample_rate = self.rate
        frame.pts = self._written
        frame.time_base = Fraction(1, self.rate)
        self._written += samples.shape[1]
        container.mux(self.stream.encode(frame))

    def write_until(
        self, seconds: float | Fraction, container: Any, *, final: bool = False
    ) -> None:
        """Encode source audio up to ``seconds`` (whole AAC frames only unless ``final``)."""
        target = round(seconds * self.rate)
        while self._written + self._buffer.shape[1] < target and not self._exhausted:
            self._pull()
        while self._written + _AAC_FRAME <= target and self._buffer.shape[1] >= _AAC_FRAME:
            self._encode(self._buffer[:, :_AAC_FRAME], container)
            self._buffer = self._buffer[:, _AAC_FRAME:]
        if final:
            rest = min(self._buffer.shape[1], target - self._written)
            if rest > 0:
                self._encode(self._buffer[:, :rest], container)
            self._buffer = self._buffer[:, :0]
            container.mux(self.stream.encode(None))

    def close(self) -> None:
        self._input.close()


class VideoWriter:
    """Stream RGB frames into an H.264 mp4, optionally with the audio of another file.

    Use as a context manager::

        with VideoWriter("out.mp4", audio_path="speech.m4a") as writer:
            for frame in frames:  # (H, W, 3) uint8 RGB
                writer.write(frame)

    Args:
        path: destination (.mp4/.mov/.mkv); its directory must exist.
        fps: frame rate.
        audio_path: file whose first audio stream is muxed (AAC), trimmed to the video duration;
            it is opened and checked here, before any frame is computed.
        crf: x264 constant rate factor (0 lossless ... 51 worst; 18 is visually lossless).
        preset: x264 speed preset.
        pad_to_even: yuv420p needs even width and height; pad odd sizes by repeating the last
            row/column (True) or raise ``VideoError`` (False).
        fragmented: a fragmented mp4 (a keyframe and a fragment every second, no encoder delay,
            packets flushed) that a player can open while it grows at ``partial_path``.
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        fps: float | Fraction = 25,
        audio_path: str | os.PathLike[str] | None = None,
        crf: int = 18,
        preset: str = "medium",
        pad_to_even: bool = True,
        fragmented: bool = False,
    ) -> None:
        if fps <= 0:
            raise ValueError(f"fps={fps} must be positive")
        if not 0 <= crf <= 51:
            raise ValueError(f"crf={crf} must be within [0, 51]")
        self.path = Path(path)
        if not self.path.parent.is_dir():
            raise VideoError(f"output directory does not exist: {self.path.parent}")
        self.fps = Fraction(fps).limit_denominator(1001)
        self.crf = crf
        self.preset = preset
        self.pad_to_even = pad_to_even
        self.fragmented = fragmented
        self.num_frames = 0
        self._audio = _AudioTrack(Path(audio_path)) if audio_path is not None else None
        # entered here, exited by close() (the file moves into place) or abort() (it is removed)
        self._output = atomic_output(self.path, suffix=f".partial{self.path.suffix}")
        self._tmp = str(self._output.__enter__())
        # Safety net for writers that are dropped without close(): never leak the temp file.
        self._cleanup = weakref.finalize(self, _remove_quietly, self._tmp)
        try:
            options = {"movflags": "+faststart"} if self.path.suffix in (".mp4", ".mov") else {}
            if fragmented:
                options = {"movflags": _FRAGMENTED, "flush_packets": "1"}
            self._container: Any = av.open(self._tmp, mode="w", options=options)
        except (av.FFmpegError, ValueError) as exc:
            self._abort_files()
            raise VideoError(f"cannot write a video to {self.path}: {exc}") from exc
        self._stream: Any = None
        self._size: tuple[int, int] | None = None  # (H, W) of the input frames
        self._closed = False

    @property
    def partial_path(self) -> Path:
        """Where the file grows until ``close`` moves it to ``path``."""
        return Path(self._tmp)

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort()

    def _open_streams(self, height: int, width: int) -> None:
        if (height % 2 or width % 2) and not self.pad_to_even:
            raise VideoError(
                f"frame size {height}x{width} is odd; H.264 yuv420p needs even sizes "
                "(pass pad_to_even=True)"
            )
        stream = self._container.add_stream("libx264", rate=self.fps)
        stream.height, stream.width = height + height % 2, width + width % 2
        stream.pix_fmt = "yuv420p"
        stream.options = {"crf": str(self.crf), "preset": self.preset}
        if self.fragmented:
            gop = str(max(1, round(self.fps)))
            stream.options |= {"tune": "zerolatency", "g": gop, "keyint_min": gop}
        self._stream = stream
        self._size = (height, width)
        if self._audio is not None:
            self._audio.add_stream(self._container)

    def write(self, frame: np.ndarray | Tensor) -> None:
        """Encode one RGB frame.

        Args:
            frame: (H, W, 3) uint8; every frame must have the size of the first.
        """
        if self._closed:
            raise VideoError("write() after the writer was closed")
        if isinstance(frame, Tensor):
            frame = frame.detach().cpu().numpy()
        if frame.dtype != np.uint8 or frame.ndim != 3 or frame.shape[2] != 3:
            raise ValueError(f"frame must be (H, W, 3) uint8 RGB, got {frame.shape} {frame.dtype}")
        height, width = frame.shape[:2]
        if self._stream is None:
            self._open_streams(height, width)
        elif (height, width) != self._size:
            raise ValueError(
                f"frame size {height}x{width} differs from the first frame {self._size}"
            )
        if height % 2 or width % 2:
            frame = np.pad(frame, ((0, height % 2), (0, width % 2), (0, 0)), mode="edge")
        video_frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(frame), format="rgb24")
        video_frame.pts = self.num_frames
        video_frame.time_base = 1 / self.fps
        self._container.mux(self._stream.encode(video_frame))
        self.num_frames += 1
        if self._audio is not None:
            # Interleave: keep the audio up to the end of the frames written so far.
            self._audio.write_until(self.num_frames / self.fps, self._container)

    def close(self) -> None:
        """Flush the encoders, add the rest of the audio and move the file into place."""
        if self._closed:
            return
        if self.num_frames == 0:
            self.abort()
            raise VideoError(f"no frames were written; {self.path} was not created")
        try:
            self._container.mux(self._stream.encode(None))
            if self._audio is not None:
                self._audio.write_until(self.num_frames / self.fps, self._container, final=True)
                self._audio.close()
            self._container.close()
            self._closed = True
            self._output.__exit__(None, None, None)
            self._cleanup.detach()
        except BaseException:
            self.abort()
            raise
        logger.debug("wrote %s (%d frames at %s fps)", self.path, self.num_frames, self.fps)

    def abort(self) -> None:
        """Stop without producing an output file (temp file removed)."""
        self._closed = True
        try:
            for closable in (self._audio, self._container):
                if closable is None:
                    continue
                try:
                    closable.close()
                except Exception as exc:  # noqa: BLE001 - cleanup must reach the file removal
                    logger.debug("ignored while aborting %s: %s", self.path, exc)
        finally:
            self._abort_files()

    def _abort_files(self) -> None:
        aborted = VideoError(f"writing {self.path} was aborted")
        self._output.__exit__(VideoError, aborted, None)
        _remove_quietly(self._tmp)
        self._cleanup.detach()


def _open_input(path: str | os.PathLike[str]) -> Any:
    path = Path(path)
    if not path.is_file():
        raise VideoError(f"video file not found: {path}")
    try:
        container = av.open(str(path), mode="r")
    except av.FFmpegError as exc:
        raise VideoError(f"could not decode {path}: it is corrupt or not a video ({exc})") from exc
    if not container.streams.video:
        container.close()
        raise VideoError(f"{path} has no video stream")
    return container


def read_video_frames(path: str | os.PathLike[str]) -> Iterator[np.ndarray]:
    """Decode the first video stream frame by frame.

    Yields:
        (H, W, 3) uint8 RGB frames.
    """
    container = _open_input(path)
    with container:
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        for frame in container.decode(stream):
            yield frame.to_ndarray(format="rgb24")


def video_fps(path: str | os.PathLike[str]) -> float:
    """Frame rate of the first video stream."""
    with _open_input(path) as container:
        stream = container.streams.video[0]
        rate = stream.average_rate or stream.guessed_rate or stream.base_rate
        if not rate:
            raise VideoError(f"{path} does not state a frame rate")
        return float(rate)


def _stream_duration(stream: Any) -> float | None:
    if stream.duration is None or stream.time_base is None:
        return None
    return float(stream.duration * stream.time_base)


def probe_video(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Facts about a video file.

    Returns:
        dict with num_frames, fps, duration (s), width, height, video_codec, has_audio,
        audio_duration (s or None), audio_codec (or None), audio_sample_rate (or None).
    """
    with _open_input(path) as container:
        video = container.streams.video[0]
        num_frames = video.frames
        if not num_frames:
            # Some containers (mkv, webm) do not store a frame count: count packets instead.
            num_frames = sum(1 for p in container.demux(video) if p.size)
        fps = float(video.average_rate or video.guessed_rate or 0)
        duration = _stream_duration(video)
        if duration is None and fps:
            duration = num_frames / fps
        audio = container.streams.audio[0] if container.streams.audio else None
        return {
            "num_frames": int(num_frames),
            "fps": fps,
            "duration": duration,
            "width": video.codec_context.width,
            "height": video.codec_context.height,
            "video_codec": video.codec_context.name,
            "has_audio": audio is not None,
            "audio_duration": _stream_duration(audio) if audio is not None else None,
            "audio_codec": audio.codec_context.name if audio is not None else None,
            "audio_sample_rate": audio.rate if audio is not None else None,
        }
