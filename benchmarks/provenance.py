"""How and where a benchmark ran: the ``command`` and ``machine`` fields of every result JSON."""

from __future__ import annotations

import os
import platform
import sys
from typing import Any

import torch


def provenance(argv: list[str] | None, *, threads: int, device: str) -> dict[str, Any]:
    """``{"command": ..., "machine": {...}}`` for the script run with ``argv`` (None: sys.argv).

    Call it when the measurements are done: ``loadavg`` is the load at that moment, the one
    number here that says whether other jobs shared the machine during the run.
    """
    args = sys.argv[1:] if argv is None else argv
    on_cuda = torch.device(device).type == "cuda"
    return {
        "command": " ".join(["python", sys.argv[0], *args]),
        "machine": {
            "platform": platform.platform(),
            "processor": platform.processor() or platform.machine(),
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
            "torch": torch.__version__,
            "threads": threads,
            "device": device,
            "cuda": torch.cuda.get_device_name(device) if on_cuda else None,
            "loadavg": os.getloadavg(),
        },
    }
