"""Writing a generation's results to disk: the mp4, optional PNG frames and motion tracks.

``save_stream`` writes a fragmented mp4 as frames arrive (``talkinghead generate --stream``).
Everything is atomic: the video goes through ``VideoWriter`` (temp file, renamed on success), frames
through ``files.atomic_directory`` (a temp folder renamed at the end), motion arrays through ``files.atomic_output``. A failure or
Ctrl-C leaves nothing half-written behind; every file gets the permissions ``open()`` would give it.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable, Iterable
from pathlib import Path

import numpy as np
from PIL import Image

from talkinghead.files import atomic_directory, atomic_output
from talkinghead.media.video import VideoWriter
from talkinghead.pipelines.base import GenerationResult

logger = logging.getLogger(__name__)


def save_result(
    result: GenerationResult,
    output: str | Path,
    *,
    audio_path: str | Path | None,
    frames_dir: str | Path | None = None,
) -> int:
    """Stream ``result.frames`` into an H.264 + AAC mp4 (and PNGs); returns the number of frames."""
    if result.frames is None:
        raise ValueError("this result's frames were already consumed")
    count = 0
    with contextlib.ExitStack() as stack:
        stack.callback(setattr, result, "frames", None)
        frames_tmp = stack.enter_context(atomic_directory(frames_dir)) if frames_dir else None
        with VideoWriter(output, fps=result.fps, audio_path=audio_path) as writer:
            for batch in result.frames:
                for frame in batch:
                    writer.write(frame)
                    if frames_tmp is not None:
                        Image.fromarray(frame).save(frames_tmp / f"{count:06d}.png")
                    count += 1
    return count


def save_stream(
    frames: Iterable[np.ndarray],
    output: str | Path,
    *,
    fps: int,
    audio_path: str | Path | None,
    on_open: Callable[[Path], None] | None = None,
) -> int:
    """Write ``(n, H, W, 3)`` uint8 batches as they come into a fragmented H.264 + AAC mp4.

    The file grows, playable, at a hidden temp path beside ``output`` (handed to ``on_open`` and
    logged) and is renamed to ``output`` when complete; a failure removes it. Returns the frame
    count.
    """
    count = 0
    with VideoWriter(output, fps=fps, audio_path=audio_path, fragmented=True) as writer:
        logger.info("streaming into %s (playable while it grows)", writer.partial_path)
        if on_open is not None:
            on_open(writer.partial_path)
        for batch in frames:
            for frame in batch:
                writer.write(frame)
                count += 1
    return count


def save_motion(result: GenerationResult, stem: str | Path) -> tuple[Path, Path]:
    """``<stem>.pose.npy`` (F, 6) and ``<stem>.blink.npy`` (F, 2): absolute tracks, reusable as drivers."""
    stem = Path(stem)
    written = []
    for suffix, array in ((".pose.npy", result.motion.pose), (".blink.npy", result.motion.eye)):
        target = stem.with_name(stem.name + suffix)
        with atomic_output(target) as tmp, tmp.open("wb") as f:
            np.save(f, np.asarray(array, np.float32))
        written.append(target)
    return written[0], written[1]
