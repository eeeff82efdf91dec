"""Checking uploads: copy within a byte limit, then decode to prove what the content is.

Nothing a client says about a file is trusted: its name is never used (the server names the file
after the format it decoded), its extension and content type are ignored. A portrait is opened
with PIL and its declared size is checked BEFORE any pixel is decoded (a small PNG can declare
20,000 x 20,000 pixels of zeros: a decompression bomb); a portrait video and the speech are
opened with PyAV and decoded with a running duration count that stops at the limit, so neither a
2-hour file nor a container that lies about its duration is ever decoded in full. Every problem
is an ``UploadError`` with an HTTP status and one sentence saying what to do.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import av
from PIL import Image, UnidentifiedImageError

from talkinghead.media.audio import load_audio
from talkinghead.media.image import SUPPORTED_FORMATS, load_portrait
from talkinghead.serve.config import Limits

__all__ = [
    "CheckedFile",
    "UploadError",
    "check_client_name",
    "check_portrait",
    "check_speech",
    "copy_limited",
]

IMAGE_EXTENSIONS = {
    "JPEG": "jpg",
    "PNG": "png",
    "WEBP": "webp",
    "BMP": "bmp",
    "TIFF": "tiff",
    "MPO": "jpg",
}
CHUNK = 1 << 20


class UploadError(ValueError):
    """An upload that cannot become a job: ``status`` is the HTTP status to answer with."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


@dataclass(frozen=True)
class CheckedFile:
    """An upload whose content decoded: the temp path and the server's name for it."""

    path: Path
    name: str  # e.g. "portrait.png", "speech.wav": role + the decoded format's extension
    kind: str  # "image" | "video" | "audio"


def check_client_name(name: str | None, what: str) -> None:
    """A client's file name is never used; one that carries a path is refused outright."""
    if name and (any(c in name for c in "/\\\0") or name.strip() in (".", "..")):
        raise UploadError(
            422, f"the {what}'s file name contains a path; send the file under a plain name"
        )


def copy_limited(src: BinaryIO, dest: Path, limit: int, what: str) -> int:
    """Copy ``src`` to ``dest`` (created, exclusive) stopping at ``limit`` bytes; returns the size."""
    size = 0
    with open(dest, "xb") as out:
        while chunk := src.read(CHUNK):
            size += len(chunk)
            if size > limit:
                raise UploadError(
                    413, f"the {what} is larger than {limit // (1 << 20)} MiB; send a smaller file"
                )
            out.write(chunk)
    if size == 0:
        raise UploadError(422, f"the {what} is empty; attach the file's content")
    return size


def check_portrait(path: Path, limits: Limits, *, video_ok: bool) -> CheckedFile:
    """A still image (any format ``data.image`` reads), or a video when the model takes one."""
    try:
        with Image.open(path) as img:
            fmt = img.format
            size = img.size
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError, Image.DecompressionBombError):
        fmt = None
    if fmt is None:
        if video_ok:
            return _check_video(path, limits)
        raise UploadError(
            422, "the portrait is not a readable image; upload a JPEG, PNG or WebP picture"
        )
    if fmt not in SUPPORTED_FORMATS:
        raise UploadError(422, f"the portrait is a {fmt} image; upload a JPEG, PNG or WebP picture")
    _check_pixels(size, limits, "portrait")
    try:
        load_portrait(path)
    except (ValueError, OSError, Image.DecompressionBombError) as err:
        raise UploadError(
            422, "the portrait image is corrupt or truncated; upload a valid JPEG, PNG or WebP file"
        ) from err
    return CheckedFile(path, f"portrait.{IMAGE_EXTENSIONS[fmt]}", "image")


def _check_pixels(size: tuple[int, int], limits: Limits, what: str) -> None:
    w, h = size
    if w < 1 or h < 1:
        raise UploadError(422, f"the {what} has no pixels ({w}x{h}); upload a real picture")
    if max(w, h) > limits.max_portrait_side or w * h > limits.max_portrait_pixels:
        raise UploadError(
            413,
            f"the {what} is {w}x{h} pixels, above the limit of {limits.max_portrait_side} px a side "
            f"and {limits.max_portrait_pixels} pixels; resize it and upload again",
        )


def _check_video(path: Path, limits: Limits) -> CheckedFile:
    try:
        with av.open(str(path), mode="r") as container:
            if not container.streams.video:
                raise UploadError(
                    422,
                    "the portrait is neither an image nor a video; upload a "
                    "JPEG/PNG picture or an mp4 video",
                )
            stream = container.streams.video[0]
            _check_pixels(
                (stream.codec_context.width, stream.codec_context.height), limits, "portrait video"
            )
            seconds = 0.0
            frames = 0
            for frame in container.decode(stream):
                frames += 1
                if frame.time is not None:
                    seconds = max(seconds, float(frame.time))
                if seconds > limits.max_video_seconds:
                    raise UploadError(
                        413,
                        f"the portrait video is longer than "
                        f"{limits.max_video_seconds:g} s; trim it and upload again",
                    )
            fmt = container.format.name.split(",")[0]
    except av.FFmpegError as err:
        raise UploadError(422, "the portrait video is corrupt; upload a valid mp4 video") from err
    if frames == 0:
        raise UploadError(422, "the portrait video has no frames; upload a valid mp4 video")
    return CheckedFile(path, f"portrait.{_safe_ext(fmt)}", "video")


def check_speech(path: Path, limits: Limits) -> CheckedFile:
    """Audio (or a video's audio track) that decodes, within the duration limit, long enough and
    not silent (``data.audio.load_audio``'s checks)."""
    limit = limits.max_speech_seconds
    too_long = UploadError(
        413, f"the speech is longer than {limit:g} s; split it into shorter clips"
    )
    try:
        with av.open(str(path), mode="r") as container:
            if not container.streams.audio:
                raise UploadError(
                    422,
                    "the speech file has no audio; upload a wav, mp3, flac, m4a or ogg recording",
                )
            stream = container.streams.audio[0]
            declared = container.duration / 1e6 if container.duration else 0.0
            if declared > limit:
                raise too_long
            seconds = 0.0
            for frame in container.decode(stream):
                seconds += frame.samples / max(1, frame.sample_rate)
                if seconds > limit:
                    raise too_long
            fmt = container.format.name.split(",")[0]
    except av.FFmpegError as err:
        raise UploadError(
            422, "the speech file is not decodable audio; upload a wav, mp3, flac, m4a or ogg file"
        ) from err
    try:
        load_audio(path)
    except ValueError as err:
        reason = str(err).replace(str(path), "the speech")
        raise UploadError(422, f"{reason}; upload a longer, audible recording") from err
    return CheckedFile(path, f"speech.{_safe_ext(fmt)}", "audio")


def _safe_ext(fmt: str) -> str:
    """A container name from FFmpeg as a file extension: letters and digits only."""
    ext = "".join(c for c in fmt.lower() if c.isalnum())[:8]
    return {"matroska": "mkv", "mov": "mp4", "ogg": "ogg"}.get(ext, ext or "bin")


def discard(*paths: Path) -> None:
    """Remove temp uploads (files or folders), ignoring the ones already gone."""
    for path in paths:
        if path.is_dir():
            shutil.rmtree(path, ignore_errors=True)
        else:
            path.unlink(missing_ok=True)
