"""The job queue on SQLite and on a real PostgreSQL server: transitions, fencing, claims, recovery."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from sqlalchemy import create_engine, delete

from talkinghead.serve.config import ServeConfig
from talkinghead.serve.db import jobs, metadata
from talkinghead.serve.jobfiles import new_job_id
from talkinghead.serve.queue import JobLost, JobQueue, QueueFull

MakeQueue = Callable[..., JobQueue]


@pytest.fixture(params=["sqlite", "postgres"])
def make_queue(request, tmp_path: Path) -> Iterator[MakeQueue]:
    """Queues over one fresh database (several may share it, as several servers do)."""
    url = None
    if request.param == "postgres":
        url = request.getfixturevalue("postgres_url")
        engine = create_engine(url)
        metadata.create_all(engine)
        with engine.begin() as conn:
            conn.execute(delete(jobs))
        engine.dispose()
    made: list[JobQueue] = []

    def make(**settings) -> JobQueue:
        queue = JobQueue(ServeConfig(data_dir=tmp_path / "data", db_url=url, **settings))
        made.append(queue)
        return queue

    yield make
    for queue in made:
        queue.close()


def _submit(queue: JobQueue, model: str = "demo") -> str:
    job_id = new_job_id()
    scratch = queue.config.uploads_dir / f"{job_id}.upload"
    scratch.mkdir(parents=True)
    (scratch / "p").write_bytes(b"portrait")
    (scratch / "s").write_bytes(b"speech")
    queue.submit(
        job_id, model, {"seed": 1}, {"portrait.png": scratch / "p", "speech.wav": scratch / "s"}
    )
    scratch.rmdir()
    return job_id


def test_a_job_goes_queued_running_succeeded(make_queue: MakeQueue) -> None:
    queue = make_queue()
    job_id = _submit(queue)
    job = queue.get(job_id)
    assert job.state == "queued" and job.inputs == {
        "portrait": "portrait.png",
        "speech": "speech.wav",
    }
    assert sorted(p.name for p in (queue.job_dir(job_id) / "inputs").iterdir()) == [
        "portrait.png",
        "speech.wav",
    ]
    claimed = queue.claim("w1", ("demo",))
    assert claimed.id == job_id and claimed.state == "running" and claimed.attempts == 1
    assert queue.claim("w2", ("demo",)) is None
    assert queue.report(claimed, "sample", 1, 2) is False
    assert queue.get(job_id).stage_done == 1
    assert queue.finish(
        claimed, "succeeded", result={"frames": 1, "fps": 25, "seed": 1, "seconds": 0.1}
    )
    assert queue.get(job_id).state == "succeeded"
    assert queue.delete(job_id) and queue.get(job_id) is None
    assert not queue.job_dir(job_id).exists()


def test_claims_only_served_models_oldest_first(make_queue: MakeQueue) -> None:
    queue = make_queue()
    other = _submit(queue, model="other")
    first, second = _submit(queue), _submit(queue)
    assert queue.claim("w", ("demo",)).id == first
    assert queue.claim("w", ("demo",)).id == second
    assert queue.claim("w", ("demo",)) is None
    assert queue.claim("w", ("other", "demo")).id == other


def test_cancel_queued_and_running(make_queue: MakeQueue) -> None:
    queue = make_queue()
    queued, running = _submit(queue), _submit(queue)
    job = queue.claim("w", ("demo",))
    assert job.id == queued
    assert queue.cancel(running).state == "canceled"
    assert queue.cancel(queued).cancel_requested is True
    assert queue.report(job, "sample", 1, 2) is True  # the worker sees the flag at its next step
    assert queue.finish(job, "canceled")
    assert queue.cancel(queued).state == "canceled"  # finished jobs stay as they are
    assert queue.delete(queued) and not queue.delete(new_job_id())


def test_a_requeued_job_fences_out_its_old_worker(make_queue: MakeQueue) -> None:
    queue = make_queue(max_attempts=2)
    job_id = _submit(queue)
    stale = queue.claim("w1", ("demo",))
    assert queue.requeue(stale_before=stale.heartbeat_at + 1) == 1  # heartbeat older: re-queued
    fresh = queue.claim("w2", ("demo",))
    assert fresh.id == job_id and fresh.attempts == 2
    with pytest.raises(JobLost):
        queue.report(stale, "sample", 1, 2)
    assert not queue.finish(stale, "succeeded")
    assert queue.requeue() == 1  # second interruption: max_attempts reached
    failed = queue.get(job_id)
    assert failed.state == "failed" and "interrupted 2 times" in failed.error


def test_release_returns_a_job_without_counting_the_attempt(make_queue: MakeQueue) -> None:
    queue = make_queue()
    job_id = _submit(queue)
    job = queue.claim("w", ("demo",))
    assert queue.release(job)
    again = queue.get(job_id)
    assert again.state == "queued" and again.attempts == 0


def test_full_queue_refuses_and_leaves_no_folder(make_queue: MakeQueue) -> None:
    queue = make_queue(max_queued=2)
    _submit(queue), _submit(queue)
    with pytest.raises(QueueFull) as full:
        queue.check_room()
    assert full.value.retry_after >= 1
    with pytest.raises(QueueFull):
        _submit(queue)
    assert len(list(queue.config.jobs_dir.iterdir())) == 2


def test_sweep_removes_folders_without_a_row(make_queue: MakeQueue) -> None:
    queue = make_queue()
    kept = _submit(queue)
    (queue.config.jobs_dir / new_job_id()).mkdir()
    (queue.config.uploads_dir / "leftover.upload").mkdir()
    assert queue.sweep() == 2
    assert [p.name for p in queue.config.jobs_dir.iterdir()] == [kept]


def test_concurrent_claimers_never_share_a_job(make_queue: MakeQueue) -> None:
    """Four 'servers' (each its own engine and pool) race over 40 jobs."""
    queues = [make_queue() for _ in range(4)]
    submitted = {_submit(queues[0]) for _ in range(40)}
    claimed: list[str] = []
    lock = threading.Lock()

    def drain(queue: JobQueue, name: str) -> None:
        while (job := queue.claim(name, ("demo",))) is not None:
            with lock:
                claimed.append(job.id)

    threads = [
        threading.Thread(target=drain, args=(q, f"s{i}:{t}"))
        for i, q in enumerate(queues)
        for t in range(2)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert len(claimed) == len(set(claimed)) == 40
    assert set(claimed) == submitted
