"""CPU thread policy: how many threads a process computes with, and threads that yield when idle.

Entry points (the CLI, benchmark scripts, server and batch workers) call :func:`set_wait_policy`
first thing, **before torch is imported** (OpenMP reads it once, when torch loads its runtime), and
:func:`configure_threads` (or, in a worker, :func:`configure_worker`) when they know the thread
count; the library never calls any of them on import. The policy:

* **Thread count**: ``threads`` when given (the ``--threads`` option), else ``OMP_NUM_THREADS`` when
  set, else the number of CPUs this process may run on (``os.sched_getaffinity``: a container's or a
  ``taskset``'s limit, not the machine's core count).
* **Waiting threads yield** (``OMP_WAIT_POLICY=PASSIVE`` unless the user set a policy): at the end
  of every parallel region OpenMP's default is to spin waiting for the next one. On a machine where
  another process wants a core, a spinning thread takes that core from the thread that has the
  work, and small parallel regions then wait for a descheduled partner: a 125-frame demo took 2.5x
  its quiet time beside one busy process with the default policy and 1.25x with this one (issue
  #15).
* **Workers share the cores**: the workers of one machine (a server's CPU workers, the ranks of a
  batch) each take :func:`split_cores`'s share and compute on at most that many threads
  (:func:`configure_worker`), so they do not oversubscribe the CPUs between them.

Child processes inherit the environment it sets; :func:`thread_env` gives the same settings for a
subprocess started with an explicit environment.
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Sequence

logger = logging.getLogger(__name__)

WAIT_POLICY = "PASSIVE"


def available_cpus() -> list[int]:
    """The CPUs this process (this thread, on Linux) may run on, in order."""
    try:
        return sorted(os.sched_getaffinity(0))
    except AttributeError:  # not Linux: no affinity masks, all CPUs
        return list(range(os.cpu_count() or 1))


def default_threads() -> int:
    """``OMP_NUM_THREADS`` when set to a positive integer, else the number of available CPUs."""
    env = os.environ.get("OMP_NUM_THREADS", "").strip()
    if env:
        try:
            # OpenMP also accepts a list "4,2" (one count per nesting level): the first applies
            value = int(env.split(",")[0])
        except ValueError:
            logger.warning("ignoring OMP_NUM_THREADS=%r: not a number", env)
        else:
            if value > 0:
                return value
    return len(available_cpus())


def set_wait_policy() -> bool:
    """Let idle OpenMP threads sleep (``OMP_WAIT_POLICY=PASSIVE``) unless the user chose a policy.

    Returns whether it takes effect in this process, i.e. torch has not been imported yet (child
    processes inherit the variable either way).
    """
    os.environ.setdefault("OMP_WAIT_POLICY", WAIT_POLICY)
    return "torch" not in sys.modules


def thread_env(threads: int | None = None) -> dict[str, str]:
    """Environment variables of the policy, e.g. for ``subprocess.run(env={**os.environ, **...})``."""
    count = threads if threads is not None else default_threads()
    if count < 1:
        raise ValueError(f"threads={count} must be >= 1.")
    return {
        "OMP_NUM_THREADS": str(count),
        "OMP_WAIT_POLICY": os.environ.get("OMP_WAIT_POLICY", WAIT_POLICY),
    }


def configure_threads(threads: int | None = None) -> int:
    """Apply the policy to this process (best before torch is imported). Returns the thread count.

    ``threads``: intra-op threads; None: ``OMP_NUM_THREADS``, else the available CPUs.
    """
    if not set_wait_policy():
        logger.debug("torch was imported before the thread policy: its wait policy stays as it is")
    env = thread_env(threads)
    os.environ.update(env)
    count = int(env["OMP_NUM_THREADS"])
    import torch  # after the environment: OpenMP reads it when torch loads its runtime

    torch.set_num_threads(count)
    return count


def parse_threads(text: str) -> int:
    """``--threads`` value: a positive integer (an argparse ``type``)."""
    import argparse

    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"--threads takes a positive integer, got {text!r}")
    return value


def split_cores(workers: int, cpus: Sequence[int] | None = None) -> list[list[int]]:
    """Each of ``workers`` workers' share of ``cpus`` (default: :func:`available_cpus`).

    Shares are contiguous and as equal as possible (8 CPUs, 3 workers: 3 + 3 + 2); with more
    workers than CPUs every worker gets one CPU, shared round-robin.
    """
    if workers < 1:
        raise ValueError(f"workers={workers} must be >= 1.")
    pool = list(cpus) if cpus is not None else available_cpus()
    if not pool:
        raise ValueError("no CPUs to share.")
    if workers >= len(pool):
        return [[pool[i % len(pool)]] for i in range(workers)]
    base, extra = divmod(len(pool), workers)
    shares, start = [], 0
    for i in range(workers):
        size = base + (1 if i < extra else 0)
        shares.append(pool[start : start + size])
        start += size
    return shares


def configure_worker(cpus: Sequence[int], threads: int | None = None) -> int:
    """Pin the calling thread to its share ``cpus`` and set its torch thread count; returns it.

    Call it in the worker before its first torch operation: on Linux the affinity is the calling
    thread's (the whole process when it has one thread, e.g. a batch rank), and the OpenMP threads
    it starts afterwards inherit it, so a server's worker threads each keep to their share. The
    count is ``threads`` when given, else at most the share and at most the process's count
    (``OMP_NUM_THREADS``, which :func:`configure_threads` set from ``--threads``).
    """
    if not cpus:
        raise ValueError("a worker needs at least one CPU.")
    if hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, cpus)
    count = threads if threads is not None else min(default_threads(), len(cpus))
    import torch

    torch.set_num_threads(count)
    return count
