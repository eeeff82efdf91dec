"""Resumable one-command training recipes (``scripts/train_*.py``): steps with done markers.

A recipe is an ordered list of named steps (data, training stages, export, evaluation) working in
one folder ``WORK``. ``run_steps`` runs each step unless ``WORK/done/<name>`` exists, so running
the command again after an interruption resumes at the first unfinished step (the training
stages themselves resume from their last checkpoint, ``train/loop.py``). Each step's wall and CPU
time (this process and its children) is added up in ``WORK/times.json``; an interrupted try counts
too, so the file holds what the recipe really cost.

``torchrun`` starts a training stage in ``procs`` processes (DDP over gloo on CPU, nccl on CUDA)
of ``threads`` threads each, the way the recipes train on a few cores.
"""

from __future__ import annotations

import json
import os
import resource
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path

from talkinghead.files import write_json

DONE_DIR = "done"
TIMES_FILE = "times.json"


def say(message: str) -> None:
    """Print one timestamped progress line (UTC), flushed at once (recipes run for hours)."""
    print(f"[{time.strftime('%H:%M:%S', time.gmtime())} UTC] {message}", flush=True)


def cpu_seconds() -> float:
    """User + system CPU seconds of this process and of its finished children."""
    own, kids = (resource.getrusage(w) for w in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN))
    return own.ru_utime + own.ru_stime + kids.ru_utime + kids.ru_stime


def read_times(work: Path) -> dict[str, dict[str, float]]:
    """``{step: {"wall_s", "cpu_s"}}`` recorded so far (empty before the first step ends)."""
    path = work / TIMES_FILE
    return json.loads(path.read_text()) if path.is_file() else {}


def _add_time(work: Path, name: str, wall: float, cpu: float) -> None:
    times = read_times(work)
    prev = times.get(name, {"wall_s": 0.0, "cpu_s": 0.0})
    times[name] = {"wall_s": prev["wall_s"] + wall, "cpu_s": prev["cpu_s"] + cpu}
    write_json(work / TIMES_FILE, times)


def run_step(work: Path, name: str, fn: Callable[[], None]) -> bool:
    """Run ``fn`` unless ``work/done/name`` exists; returns whether it ran.

    The marker is written only after ``fn`` returns; a step that raises (or is interrupted) has
    its time recorded and runs again next time.
    """
    marker = work / DONE_DIR / name
    if marker.exists():
        say(f"{name}: done before, skipped")
        return False
    say(f"{name}: start")
    t0, c0 = time.time(), cpu_seconds()
    try:
        fn()
    finally:
        wall, cpu = time.time() - t0, cpu_seconds() - c0
        _add_time(work, name, wall, cpu)
    marker.parent.mkdir(parents=True, exist_ok=True)
    marker.touch()
    say(f"{name}: done in {wall / 60:.1f} min wall, {cpu / 60:.1f} min CPU")
    return True


def run_steps(
    work: Path,
    steps: Sequence[tuple[str, Callable[[], None]]],
    *,
    until: str | None = None,
    only: set[str] | None = None,
) -> None:
    """Run ``steps`` in order through ``run_step``; ``only`` picks some, ``until`` stops after one."""
    names = [name for name, _ in steps]
    for wanted in ([until] if until else []) + sorted(only or ()):
        if wanted not in names:
            raise ValueError(f"unknown step {wanted!r}; the steps are {', '.join(names)}.")
    work.mkdir(parents=True, exist_ok=True)
    t0 = time.time()
    for name, fn in steps:
        if only is None or name in only:
            run_step(work, name, fn)
        if name == until:
            break
    times = read_times(work)
    wall = sum(t["wall_s"] for t in times.values()) / 60
    cpu = sum(t["cpu_s"] for t in times.values()) / 60
    say(
        f"finished in {(time.time() - t0) / 60:.1f} min this run; recipe total {wall:.1f} min "
        f"wall, {cpu:.1f} min CPU ({work / TIMES_FILE})"
    )


def one_thread_env() -> dict[str, str]:
    """This process's environment for a child of one OpenMP thread with unbuffered output."""
    return dict(os.environ, OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1")


def torchrun(script: str | Path, argv: Sequence[str], procs: int, threads: int = 1) -> None:
    """Run ``python script *argv`` in ``procs`` processes of ``threads`` threads under
    torch.distributed.run."""
    cmd = [
        sys.executable, "-m", "torch.distributed.run", "--standalone",
        f"--nproc_per_node={procs}", str(script), *argv,
    ]  # fmt: skip
    subprocess.run(cmd, check=True, env=dict(one_thread_env(), OMP_NUM_THREADS=str(threads)))
