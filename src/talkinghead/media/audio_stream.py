"""Speech that arrives over time: a bounded buffer over an iterator of 16 kHz chunks.

A microphone-like source is an iterator of (N,) float32 chunks of mono 16 kHz speech (any chunk
sizes); a file path or a whole (N,) array is the same thing with everything already there. The
buffer pulls chunks only until the samples a caller asks for have arrived (or the source ended),
and forgets samples before a point the caller no longer needs, so memory does not grow with the
length of the speech.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator
from pathlib import Path

import numpy as np

from talkinghead.media.audio import HUBERT_SAMPLE_RATE, load_audio

AudioSource = str | os.PathLike[str] | np.ndarray | Iterable[np.ndarray]


class AudioBuffer:
    """Absolute-indexed window over a stream of mono 16 kHz samples.

    Args:
        source: a speech file (decoded whole with ``load_audio``: 230 MB per hour), an (N,)
            float32 array, or an iterator of (n,) float32 chunks.
    """

    def __init__(self, source: AudioSource) -> None:
        if isinstance(source, (str, os.PathLike)):
            source = load_audio(Path(source), HUBERT_SAMPLE_RATE)
        self._offset = 0  # absolute index of _buf[0]
        self._buf = np.zeros(0, np.float32)
        self.ended = isinstance(source, np.ndarray)  # everything is there: the length is known
        self._chunks: Iterator[np.ndarray] = iter([source] if self.ended else source)
        if self.ended:
            self.fill(len(source))
            self.ended = True

    @property
    def received(self) -> int:
        """Samples received so far (absolute count)."""
        return self._offset + len(self._buf)

    def fill(self, upto: int) -> None:
        """Pull chunks until ``upto`` samples have arrived or the source is exhausted."""
        parts = [self._buf]
        have = self.received
        while have < upto:
            chunk = next(self._chunks, None)
            if chunk is None:
                self.ended = True
                break
            chunk = np.asarray(chunk)
            if chunk.ndim != 1 or not np.issubdtype(chunk.dtype, np.floating):
                raise ValueError(
                    f"audio chunks must be (N,) float mono 16 kHz samples, got {chunk.dtype} "
                    f"{chunk.shape}"
                )
            parts.append(chunk.astype(np.float32, copy=False))
            have += len(chunk)
        if len(parts) > 1:
            self._buf = np.concatenate(parts)

    def read(self, start: int, end: int) -> np.ndarray:
        """Samples ``[start, end)`` (absolute; ``end`` clipped to what arrived): (n,) float32."""
        if start < self._offset:
            raise ValueError(f"samples before {self._offset} were already dropped")
        return self._buf[start - self._offset : max(start, end) - self._offset]

    def drop_before(self, start: int) -> None:
        """Forget samples before absolute index ``start``."""
        cut = min(max(0, start - self._offset), len(self._buf))
        if cut:
            self._buf = self._buf[cut:].copy()
            self._offset += cut
