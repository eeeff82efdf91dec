"""Allocator policy: freed memory is reused (page faults counted, not timed) and child env."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from talkinghead import allocator

# a 64 MiB tensor allocated, filled and freed 12 times: the last fill faults its pages in again
# (16,384 pages of 4 KiB) unless the freed memory was kept (the heap settles within ~10 cycles)
_SECOND_FILL_FAULTS = """
import json, resource, sys
from talkinghead import allocator
applied = allocator.reuse_freed_memory() if sys.argv[1] == "policy" else False
import torch
torch.set_num_threads(1)
for _ in range(12):
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    t = torch.ones(1 << 24)
    del t
    faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before
print(json.dumps({"applied": applied, "faults": faults}))
"""


def _second_fill_faults(mode: str) -> dict:
    proc = subprocess.run(
        [sys.executable, "-c", _SECOND_FILL_FAULTS, mode],
        capture_output=True,
        text=True,
        check=True,
        timeout=120,
    )
    return json.loads(proc.stdout.strip().splitlines()[-1])


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc policy")
def test_freed_memory_is_reused() -> None:
    default, policy = _second_fill_faults("default"), _second_fill_faults("policy")
    assert policy["applied"]
    assert default["faults"] > 10_000  # mmap'ed afresh: every page faulted in again
    assert policy["faults"] < 1_000


def test_malloc_env_keeps_other_tunables(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("GLIBC_TUNABLES", raising=False)
    ours = allocator.malloc_env(1 << 20)["GLIBC_TUNABLES"]
    assert ours == "glibc.malloc.mmap_max=0:glibc.malloc.trim_threshold=1048576"
    monkeypatch.setenv("GLIBC_TUNABLES", "glibc.malloc.arena_max=2")
    assert allocator.malloc_env(1 << 20)["GLIBC_TUNABLES"] == f"glibc.malloc.arena_max=2:{ours}"
