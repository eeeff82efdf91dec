"""Writing many clips resumably, in worker processes, and the held-out split of a data set.

``data prepare`` (real videos) and ``data synth`` (procedural clips) both make a data set the same way:
clips already complete in ``clips/`` are kept (when they were made with the same settings), half-written
ones are removed, the missing ones are made by ``work(job)`` in a process pool (or in this process), and
the manifest marks a deterministic share of the clips as held out (``held_out_split``).
"""

from __future__ import annotations

import hashlib
import logging
import multiprocessing
import os
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from tqdm.auto import tqdm

from talkinghead.data.layout import ClipReader, clip_done, remove_partial_clips

logger = logging.getLogger(__name__)


def held_out_split(ids: Sequence[str], seed: int, fraction: float) -> list[bool]:
    """Which clips are held out (split ``test``): each with probability ``fraction``.

    A clip's draw depends only on ``(seed, its id)``, so the split of the clips already there does
    not change when more are added; with two or more clips and ``fraction > 0`` at least one is held
    out (the one with the smallest draw) and at least one is not (the one with the largest). A numeric id (the synthetic sets' ``"000012"``) draws with
    its number, any other id with a hash of it.
    """
    draws = [_draw(seed, clip_id) for clip_id in ids]
    is_test = [d < fraction for d in draws]
    if len(ids) >= 2 and fraction > 0 and not any(is_test):
        is_test[int(np.argmin(draws))] = True
    if len(ids) >= 2 and all(is_test):
        is_test[int(np.argmax(draws))] = False  # something is left to train on
    return is_test


def _draw(seed: int, clip_id: str) -> float:
    key = (
        int(clip_id)
        if clip_id.isdigit()
        else int.from_bytes(hashlib.sha256(clip_id.encode()).digest()[:8])
    )
    return float(np.random.default_rng([seed, key, 0x7E57]).random())


def completed_clips(
    clips_dir: str | os.PathLike[str], ids: Sequence[str], settings_key: str, settings: Any
) -> dict[str, dict[str, Any]]:
    """``clip.json`` of the clips of ``ids`` already complete; half-written clips are removed.

    Raises:
        ValueError: a complete clip was made with other settings (its ``clip.json[settings_key]``).
    """
    clips_dir = Path(clips_dir)
    clips_dir.mkdir(parents=True, exist_ok=True)
    if removed := remove_partial_clips(clips_dir):
        logger.info("removed %d half-written clips", removed)
    done = {}
    for clip_id in ids:
        if clip_done(clips_dir, clip_id):
            info = ClipReader(clips_dir / clip_id).info
            if info.get(settings_key) != settings:
                raise ValueError(
                    f"{clips_dir / clip_id} was made with other settings "
                    f"({info.get(settings_key)}); use a new OUT_DIR"
                )
            done[clip_id] = info
    return done


def run_clip_jobs(
    jobs: Sequence[Any],
    work: Callable[[Any], Any],
    *,
    workers: int,
    total: int,
    initializer: Callable[..., None] | None = None,
    initargs: tuple = (),
    progress: bool = True,
    unit: str = "clip",
) -> Iterator[Any]:
    """Yield ``work(job)`` for every job as it finishes, in ``workers`` processes (1: this one).

    ``initializer(*initargs)`` prepares each process (in this one too when ``workers == 1``). The
    progress bar counts ``total`` items, of which ``total - len(jobs)`` were done before.
    """
    with tqdm(total=total, initial=total - len(jobs), disable=not progress, unit=unit) as bar:
        if workers == 1 or len(jobs) <= 1:
            if initializer is not None:
                initializer(*initargs)
            results: Iterator[Any] = map(work, jobs)
            pool = None
        else:
            ctx = multiprocessing.get_context("spawn")  # fork + torch/OpenMP threads can hang
            pool = ctx.Pool(min(workers, len(jobs)), initializer=initializer, initargs=initargs)
            results = pool.imap_unordered(work, jobs)
        try:
            for result in results:
                yield result
                bar.update()
        finally:
            if pool is not None:
                pool.close()
                pool.join()
