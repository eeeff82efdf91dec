"""Thread policy: thread count from --threads / OMP_NUM_THREADS / affinity, passive wait, core shares;
the CLI's --threads on every command that computes, and which of them keep freed memory."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from talkinghead import threads
from talkinghead.cli import build_parser, flags


def test_split_cores_contiguous_and_even() -> None:
    assert threads.split_cores(3, range(8)) == [[0, 1, 2], [3, 4, 5], [6, 7]]
    assert threads.split_cores(1, [4, 5]) == [[4, 5]]
    assert threads.split_cores(2, [0, 1]) == [[0], [1]]


def test_split_cores_more_workers_than_cpus_share_round_robin() -> None:
    assert threads.split_cores(3, [0, 1]) == [[0], [1], [0]]
    with pytest.raises(ValueError, match="workers"):
        threads.split_cores(0, [0, 1])


def test_default_threads_honours_omp_num_threads(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 1, 2}, raising=False)
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    assert threads.default_threads() == 3  # the CPUs this process may use
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    assert threads.default_threads() == 1
    monkeypatch.setenv("OMP_NUM_THREADS", "bogus")
    assert threads.default_threads() == 3


def test_thread_env_passive_unless_the_user_chose(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("OMP_WAIT_POLICY", raising=False)
    assert threads.thread_env(2) == {"OMP_NUM_THREADS": "2", "OMP_WAIT_POLICY": "PASSIVE"}
    monkeypatch.setenv("OMP_WAIT_POLICY", "ACTIVE")
    assert threads.thread_env(1)["OMP_WAIT_POLICY"] == "ACTIVE"
    with pytest.raises(ValueError, match="threads"):
        threads.thread_env(0)


def _fresh_python(code: str, **env: str) -> dict:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("OMP_")}
    proc = subprocess.run(
        [sys.executable, "-c", code],
        env={**clean, **env},
        capture_output=True,
        text=True,
        check=True,
        timeout=120,
    )
    return json.loads(proc.stdout.strip().splitlines()[-1])


def test_configure_threads_sets_the_policy_before_torch_loads() -> None:
    code = """
import json, os, sys
from talkinghead import threads
before = "torch" in sys.modules
n = threads.configure_threads(1)
import torch
print(json.dumps({"before": before, "n": n, "torch": torch.get_num_threads(),
                  "wait": os.environ["OMP_WAIT_POLICY"], "omp": os.environ["OMP_NUM_THREADS"]}))
"""
    out = _fresh_python(code)
    assert out == {"before": False, "n": 1, "torch": 1, "wait": "PASSIVE", "omp": "1"}


def test_configure_threads_default_is_omp_num_threads_else_affinity() -> None:
    code = """
import json, os
from talkinghead import threads
n = threads.configure_threads()
import torch
print(json.dumps({"n": n, "torch": torch.get_num_threads(), "cpus": len(os.sched_getaffinity(0))}))
"""
    out = _fresh_python(code)
    assert out["n"] == out["torch"] == out["cpus"]
    assert _fresh_python(code, OMP_NUM_THREADS="1")["torch"] == 1


def test_configure_worker_pins_its_share() -> None:
    code = """
import json, os
from talkinghead import threads
cpus = threads.available_cpus()
n = threads.configure_worker(threads.split_cores(len(cpus))[-1])
print(json.dumps({"n": n, "mine": sorted(os.sched_getaffinity(0)), "last": cpus[-1]}))
"""
    out = _fresh_python(code)
    assert out["n"] == 1 and out["mine"] == [out["last"]]


def test_configure_worker_pins_the_calling_thread_only() -> None:
    # a server's CPU workers are threads: each keeps to its share, the rest of the process does not
    code = """
import json, os, threading
from talkinghead import threads
cpus = threads.available_cpus()
seen = {}
def worker():
    seen["n"] = threads.configure_worker(cpus[-1:])
    seen["mine"] = sorted(os.sched_getaffinity(0))
t = threading.Thread(target=worker)
t.start(); t.join()
print(json.dumps({**seen, "main": sorted(os.sched_getaffinity(0)), "cpus": cpus}))
"""
    out = _fresh_python(code, OMP_NUM_THREADS="4")
    assert out["n"] == 1 and out["mine"] == out["cpus"][-1:]
    assert out["main"] == out["cpus"]


def test_configure_worker_threads_at_most_the_process_count(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    pinned: list[list[int]] = []
    monkeypatch.setattr(os, "sched_setaffinity", lambda pid, cpus: pinned.append(cpus))
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: set(range(8)), raising=False)
    import torch

    before = torch.get_num_threads()
    try:
        monkeypatch.setenv("OMP_NUM_THREADS", "2")
        assert threads.configure_worker([0, 1, 2, 3]) == 2
        monkeypatch.delenv("OMP_NUM_THREADS")
        assert threads.configure_worker([0, 1, 2, 3]) == 4
        assert threads.configure_worker([0, 1, 2, 3], threads=3) == 3
    finally:
        torch.set_num_threads(before)
    assert pinned == [[0, 1, 2, 3]] * 3


REQUIRED = {
    "generate": ["--image", "a.png", "--audio", "a.wav", "-o", "a.mp4"],
    "demo": [],
    "train": ["lfg"],
    "serve": [],
    "batch": ["jobs.csv", "-o", "out"],
}


@pytest.mark.parametrize("command", sorted(REQUIRED))
def test_cli_threads_option(command: str) -> None:
    required = REQUIRED[command]
    args = build_parser().parse_args([command, *required, "--threads", "2"])
    assert args.threads == 2
    assert build_parser().parse_args([command, *required]).threads is None
    with pytest.raises(SystemExit):
        build_parser().parse_args([command, *required, "--threads", "0"])
    # freed memory is kept only by commands whose process ends with its work
    assert args.reuse_memory == (command in ("generate", "demo", "batch"))


def test_cli_applies_the_policy_before_the_command(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[tuple[str, object]] = []
    monkeypatch.setattr(threads, "configure_threads", lambda n: calls.append(("threads", n)))
    monkeypatch.setattr(
        "talkinghead.allocator.reuse_freed_memory", lambda: calls.append(("memory", None))
    )
    args = build_parser().parse_args(["demo", "--threads", "3"])
    flags.apply_process_flags(args)
    args = build_parser().parse_args(["serve", "--threads", "1"])
    flags.apply_process_flags(args)
    flags.apply_process_flags(build_parser().parse_args(["models"]))  # computes nothing
    assert calls == [("threads", 3), ("memory", None), ("threads", 1)]
