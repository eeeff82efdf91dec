"""What every family's pipeline is: the protocol the CLI, the server and batch jobs rely on.

A pipeline turns a source (a portrait, or a person's video for families that take one) and speech into
frames, in two stages (segment-anything's ``set_image`` then ``predict``)::

    pipe = TalkingHeadPipeline.from_pretrained(path)     # the family comes from model_index.json
    prepared = pipe.prepare("face.jpg")                  # detect, crop, encode: once per source
    for clip in clips:
        result = pipe(prepared, clip, GenerateOptions(seed=7), callback=report)
        save_result(result, ...)

Long work reports progress through ``callback(stage, done, total)`` (``ProgressBars`` draws tqdm bars
from it); a callback that raises stops the generation at the next step (the server's cancel).
"""

from __future__ import annotations

import secrets
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch
from tqdm.auto import tqdm

from talkinghead.families import get_family, resolve
from talkinghead.model_index import has_model_index, read_model_index

ProgressCallback = Callable[[str, int, int], None]  # (stage, done, total); total 0 = unknown

# a folder without model_index.json is DAWN's: a folder of DAWN models or the official download
DEFAULT_FAMILY = "dawn"


@dataclass
class GenerationResult:
    """What one call produced.

    Attributes:
        frames: iterator of (n, H, W, 3) uint8 RGB batches (consumed once), or None after saving.
        num_frames: F, the clip length at ``fps``.
        fps: frame rate.
        seed: the seed that reproduces this output.
        prepared: the prepared source (reusable for another clip).
        motion: per-frame head motion where the family makes it explicit (DAWN), else None.
    """

    frames: Iterator[np.ndarray] | None
    num_frames: int
    fps: int
    seed: int
    prepared: Any
    motion: Any = None


class TalkingHeadPipeline:
    """Base of every family's pipeline; ``from_pretrained`` on this class picks the family.

    Subclasses set ``family`` (the ``families.FAMILIES`` key) and ``options_class`` (a frozen dataclass
    of runtime knobs whose fields become the ``generate`` flags) and implement ``from_pretrained``,
    ``to``, ``prepare`` and ``__call__``.
    """

    family: ClassVar[str] = ""
    options_class: ClassVar[type] = object

    @classmethod
    def from_pretrained(
        cls,
        path: str | Path,
        *,
        device: str | torch.device = "cpu",
        dtype: torch.dtype = torch.float32,
        **kwargs: Any,
    ) -> TalkingHeadPipeline:
        """Load the model directory at ``path`` with its family's pipeline class."""
        if cls is not TalkingHeadPipeline:
            raise NotImplementedError(f"{cls.__name__} must implement from_pretrained")
        path = Path(path).expanduser()
        family = read_model_index(path).family if has_model_index(path) else DEFAULT_FAMILY
        pipeline_cls = resolve(get_family(family).pipeline)
        return pipeline_cls.from_pretrained(path, device=device, dtype=dtype, **kwargs)

    def to(
        self, device: str | torch.device, dtype: torch.dtype | None = None
    ) -> TalkingHeadPipeline:
        raise NotImplementedError

    def prepare(self, source: Any, options: Any = None) -> Any:
        """Analyse and encode a source once, for any number of calls."""
        raise NotImplementedError

    def __call__(
        self,
        source: Any,
        audio: str | Path | np.ndarray,
        options: Any = None,
        *,
        generator: torch.Generator | None = None,
        callback: ProgressCallback | None = None,
    ) -> GenerationResult:
        raise NotImplementedError

    @staticmethod
    def seeded_generator(
        seed: int | None,
        generator: torch.Generator | None = None,
        device: str | torch.device = "cpu",
    ) -> tuple[int, torch.Generator]:
        """The seed that reproduces a call and the generator its draws come from.

        A caller's ``generator`` is used as it is (its initial seed is the one reported); otherwise a
        new one on ``device`` is seeded with ``seed``, drawn at random (31 bits) when None.
        """
        if generator is not None:
            return generator.initial_seed(), generator
        seed = seed if seed is not None else secrets.randbits(31)
        return seed, torch.Generator(device=device).manual_seed(seed)


class ProgressBars:
    """A ``ProgressCallback`` that draws one tqdm bar per stage (the CLI's)."""

    def __init__(self, disable: bool = False) -> None:
        self.disable = disable
        self._bar: tqdm | None = None
        self._stage = ""

    def __call__(self, stage: str, done: int, total: int) -> None:
        if stage != self._stage or self._bar is None:
            self.close()
            self._stage = stage
            self._bar = tqdm(total=total or None, desc=stage, disable=self.disable, leave=True)
        self._bar.update(done - self._bar.n)
        if 0 < total <= done:
            self.close()

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None
