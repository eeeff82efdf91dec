"""Process memory policy: freed memory is kept for reuse instead of being handed back to the OS.

glibc's malloc serves every allocation above its mmap threshold (at most 32 MiB) with a fresh
``mmap`` and unmaps it when freed, so each large temporary of a sampling step (a temporal
attention's q/k/v projection of a chunk of pixels is ~50 MiB) is new memory that the kernel faults
in and zeroes page by page, at every step. One UNet forward at the reduced-golden width and 200
frames made 0.45-0.7 million minor page faults and spent 1.2-1.8 s of system CPU time on them (about
15 % of its CPU time); serving every allocation from the heap and trimming the heap only above
1 GiB, the second and later forwards reuse the same pages: under 25,000 faults, ~0.03 s (issue #15;
counts from ``resource.getrusage``, not timings, so they hold on a loaded machine).

What it costs: glibc keeps only memory the process has already used, so the process holds at most
its own peak working memory, and at most ``keep_bytes`` of it, until it allocates again or exits;
its peak is unchanged. Who applies it:

* never the library on import: it is a process-wide malloc setting that the host application did
  not choose;
* the commands whose process ends with its work: ``talkinghead generate``, ``demo`` and ``batch``
  (one item after another, each reusing the last one's pages), and the benchmarks' workers;
* not ``talkinghead serve`` by default: a server idles between jobs, and several servers (or batch
  ranks beside one) on one machine would each sit on their last job's working memory. An operator
  whose server runs jobs back to back opts in through the server's environment with glibc's own
  setting, ``GLIBC_TUNABLES=glibc.malloc.mmap_max=0:glibc.malloc.trim_threshold=BYTES``
  (:func:`malloc_env` builds it), sized to one job's working memory.

:func:`reuse_freed_memory` applies it to this process, :func:`malloc_env` to a child process (glibc
reads ``GLIBC_TUNABLES`` when it starts). Elsewhere than glibc (macOS, musl) both do nothing.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
import os

logger = logging.getLogger(__name__)

ONE_SHOT_KEEP_BYTES = 1 << 30  # what the one-shot commands keep: above a DDIM step's temporaries
_M_TRIM_THRESHOLD, _M_MMAP_MAX = -1, -4  # mallopt parameters (malloc.h)


def _libc() -> ctypes.CDLL | None:
    name = ctypes.util.find_library("c")
    if name is None:
        return None
    libc = ctypes.CDLL(name)
    return libc if hasattr(libc, "mallopt") and hasattr(libc, "gnu_get_libc_version") else None


def reuse_freed_memory(keep_bytes: int = ONE_SHOT_KEEP_BYTES) -> bool:
    """Serve all allocations of this process from the heap and keep up to ``keep_bytes`` of freed
    memory in it. Returns whether it took effect (glibc only); it applies to later allocations."""
    libc = _libc()
    if libc is None:
        return False
    ok = libc.mallopt(_M_MMAP_MAX, 0) == 1 and libc.mallopt(_M_TRIM_THRESHOLD, keep_bytes) == 1
    if not ok:
        logger.debug("mallopt refused the allocator policy; glibc defaults stay")
    return ok


def malloc_env(keep_bytes: int = ONE_SHOT_KEEP_BYTES) -> dict[str, str]:
    """``GLIBC_TUNABLES`` with the same policy, for a child process's environment (keeps the
    caller's other tunables)."""
    ours = f"glibc.malloc.mmap_max=0:glibc.malloc.trim_threshold={keep_bytes}"
    theirs = os.environ.get("GLIBC_TUNABLES", "")
    return {"GLIBC_TUNABLES": f"{theirs}:{ours}" if theirs else ours}
