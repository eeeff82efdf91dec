"""Several CPU workers of one server split the cores; a lone CPU worker keeps the process's policy."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest

from talkinghead import threads
from talkinghead.serve import pool as pool_module
from talkinghead.serve import worker as worker_module
from talkinghead.serve.config import ServeConfig
from talkinghead.serve.pool import WorkerPool
from talkinghead.serve.queue import JobQueue


def _shares(tmp_path: Path, devices: tuple[str, ...]) -> list[list[int] | None]:
    config = ServeConfig(data_dir=tmp_path / "data", devices=devices)
    queue = JobQueue(config)
    try:
        return [w.cpus for w in WorkerPool(queue, config).workers]
    finally:
        queue.close()


def test_cpu_workers_get_contiguous_shares(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(pool_module, "split_cores", lambda n: threads.split_cores(n, range(5)))
    assert _shares(tmp_path, ("cpu", "cuda:0", "cpu", "cpu")) == [[0, 1], None, [2, 3], [4]]
    assert _shares(tmp_path, ("cpu",)) == [None]


def test_a_worker_pins_itself_before_loading_its_model(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    events: list[object] = []
    monkeypatch.setattr(threads, "configure_worker", lambda cpus: events.append(cpus) or 1)
    monkeypatch.setattr(worker_module, "load_model", lambda name, device: events.append(name))
    config = ServeConfig(data_dir=tmp_path / "data", devices=("cpu", "cpu"))
    stop = threading.Event()
    stop.set()  # load the default model, then leave the job loop at once
    queue = JobQueue(config)
    try:
        worker = worker_module.Worker(queue, config, "cpu", 1, stop, cpus=[1])
        worker.run()
    finally:
        queue.close()
    assert events == [[1], "demo"] and worker.ready.is_set()
