"""The workers of one server and the janitor that keeps the queue honest.

At start, an embedded (SQLite) server takes an exclusive lock on its data folder, re-queues every
job left running by a previous process (kill -9, power loss) and removes job folders that never
got a row. On a shared PostgreSQL queue nothing is assumed about other servers: a running job is
re-queued only when its heartbeat is older than the lease. The janitor thread refreshes the
heartbeats of this server's jobs and re-queues stale ones of others.

Several CPU workers split the CPUs this process may use between them (``threads.split_cores``):
each keeps its thread and the OpenMP threads it starts to its own share, so they do not
oversubscribe the cores between them; a lone CPU worker uses the process's thread policy as it is.
"""

from __future__ import annotations

import fcntl
import logging
import os
import threading
import time
from pathlib import Path

from talkinghead.serve.config import ServeConfig
from talkinghead.serve.queue import JobQueue
from talkinghead.serve.worker import Worker
from talkinghead.threads import split_cores

__all__ = ["DataDirLocked", "WorkerPool", "default_devices"]

logger = logging.getLogger(__name__)


class DataDirLocked(RuntimeError):
    """Another server owns the embedded queue of this data folder."""


def default_devices(workers: int | None = None, device: str | None = None) -> tuple[str, ...]:
    """One worker per GPU when there are GPUs, else ``workers`` (default 1) on the CPU."""
    import torch

    if device is not None:
        return (device,) * (workers or 1)
    if torch.cuda.is_available():
        count = torch.cuda.device_count()
        return tuple(f"cuda:{i}" for i in range(count if workers is None else min(workers, count)))
    return ("cpu",) * (workers or 1)


class WorkerPool:
    """Start, watch and stop the workers of one server."""

    def __init__(self, queue: JobQueue, config: ServeConfig) -> None:
        self.queue = queue
        self.config = config
        self.stop_event = threading.Event()
        cpu_workers = [i for i, device in enumerate(config.devices) if device == "cpu"]
        cpus = (
            dict(zip(cpu_workers, split_cores(len(cpu_workers)), strict=True))
            if len(cpu_workers) > 1
            else {}
        )
        self.workers = [
            Worker(queue, config, device, i, self.stop_event, cpus=cpus.get(i))
            for i, device in enumerate(config.devices)
        ]
        self._janitor = threading.Thread(target=self._tend, name="talkinghead-janitor", daemon=True)
        self._lock_fd: int | None = None

    def start(self) -> None:
        if self.config.embedded:
            self._lock_data_dir()
            requeued = self.queue.requeue()
            swept = self.queue.sweep()
            if requeued or swept:
                logger.info(
                    "recovered %d interrupted jobs, removed %d orphan files", requeued, swept
                )
        else:
            self.queue.requeue(stale_before=time.time() - self.config.lease_seconds)
        for worker in self.workers:
            worker.start()
        self._janitor.start()

    @property
    def ready(self) -> bool:
        return all(w.ready.is_set() for w in self.workers)

    def notify(self) -> None:
        """A job was queued here: idle workers look now instead of at their next poll."""
        for worker in self.workers:
            worker.wake.set()

    def stop(self, timeout: float = 30.0) -> None:
        """Stop claiming; a running job is returned to the queue at its next step."""
        self.stop_event.set()
        self.notify()
        for worker in self.workers:
            if worker.is_alive():
                worker.join(timeout)
        if self._lock_fd is not None:
            os.close(self._lock_fd)
            self._lock_fd = None

    def _tend(self) -> None:
        period = max(0.5, self.config.lease_seconds / 3)
        while not self.stop_event.wait(period):
            try:
                for worker in self.workers:
                    if worker.current is not None:
                        self.queue.heartbeat(worker.worker_id)
                if not self.config.embedded:
                    self.queue.requeue(stale_before=time.time() - self.config.lease_seconds)
            except Exception:
                logger.exception("janitor could not reach the queue")

    def _lock_data_dir(self) -> None:
        path = Path(self.config.data_dir) / "server.lock"
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise DataDirLocked(
                f"another talkinghead server uses {self.config.data_dir}; stop it or pass another "
                "--data-dir"
            ) from None
        self._lock_fd = fd
