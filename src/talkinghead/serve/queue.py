"""The persistent job queue: one row per job (``db.jobs``) plus its folder (``jobfiles``).

Every state change is one transaction, and every change a worker makes is fenced by the claim
token of its attempt: a worker whose job was re-queued (lease expired) or deleted can no longer
write to it. A claim is one ``UPDATE ... WHERE id = (SELECT ... LIMIT 1 FOR UPDATE SKIP LOCKED)
RETURNING``: on PostgreSQL concurrent claimers skip each other's rows; SQLite ignores the
``FOR UPDATE`` and the statement runs under the write lock (``BEGIN IMMEDIATE``), which serialises
claimers. Either way no job is handed out twice.
"""

from __future__ import annotations

import secrets
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sqlalchemy import delete, func, insert, select, update

from talkinghead.serve.config import ServeConfig
from talkinghead.serve.db import FINISHED, jobs, open_engines
from talkinghead.serve.jobfiles import install_inputs, sweep_orphans

__all__ = ["Job", "JobLost", "JobQueue", "QueueFull"]

INTERRUPTED = (
    "the job was interrupted {n} times (the server stopped while running it); submit it again"
)


class QueueFull(Exception):
    """The bounded queue has no room; ``retry_after`` (seconds) is a fair wait."""

    def __init__(self, retry_after: int) -> None:
        super().__init__(f"the queue is full; retry in {retry_after} s")
        self.retry_after = retry_after


class JobLost(Exception):
    """A worker's attempt no longer owns its job (re-queued elsewhere, or deleted)."""


@dataclass(frozen=True)
class Job:
    """A snapshot of one row (see ``db.jobs`` for the fields)."""

    id: str
    model: str
    state: str
    options: dict[str, Any]
    inputs: dict[str, str]
    stage: str | None
    stage_done: int | None
    stage_total: int | None
    error: str | None
    result: dict[str, Any] | None
    created_at: float
    started_at: float | None
    finished_at: float | None
    heartbeat_at: float | None
    worker: str | None
    claim: str | None
    attempts: int
    cancel_requested: bool

    @classmethod
    def from_row(cls, row: Any) -> Job:
        return cls(**dict(row._mapping))


class JobQueue:
    """Jobs of one data folder and one database (``ServeConfig.queue_url``)."""

    def __init__(self, config: ServeConfig) -> None:
        self.config = config
        config.jobs_dir.mkdir(parents=True, exist_ok=True)
        config.uploads_dir.mkdir(parents=True, exist_ok=True)
        self._read, self._write = open_engines(config.queue_url)

    def close(self) -> None:
        self._read.dispose()
        self._write.dispose()

    def job_dir(self, job_id: str) -> Path:
        return self.config.jobs_dir / job_id

    # -- clients ---------------------------------------------------------------------------------

    def check_room(self) -> None:
        """Raise ``QueueFull`` early, before an upload is checked, when no job could be added."""
        if self.count("queued") >= self.config.max_queued:
            raise QueueFull(self.retry_after())

    def submit(
        self, job_id: str, model: str, options: dict[str, Any], files: dict[str, Path]
    ) -> Job:
        """Create a queued job from checked uploads (file name in inputs/ -> temp path).

        The folder is in place before the row exists; if the queue is full the folder goes again.
        """
        folder = install_inputs(self.config.jobs_dir, self.config.uploads_dir, job_id, files)
        row = {
            "id": job_id,
            "model": model,
            "state": "queued",
            "options": options,
            "inputs": {name.split(".")[0]: name for name in files},
            "created_at": time.time(),
            "attempts": 0,
            "cancel_requested": False,
        }
        try:
            with self._write.begin() as conn:
                queued = conn.execute(
                    select(func.count()).select_from(jobs).where(jobs.c.state == "queued")
                ).scalar_one()
                if queued >= self.config.max_queued:
                    raise QueueFull(self.retry_after())
                conn.execute(insert(jobs).values(**row))
        except BaseException:
            shutil.rmtree(folder, ignore_errors=True)
            raise
        job = self.get(job_id)
        assert job is not None
        return job

    def get(self, job_id: str) -> Job | None:
        with self._read.begin() as conn:
            row = conn.execute(select(jobs).where(jobs.c.id == job_id)).first()
        return Job.from_row(row) if row is not None else None

    def page(self, *, limit: int, offset: int, state: str | None = None) -> tuple[list[Job], int]:
        """Newest first: (one page, total count)."""
        where = [jobs.c.state == state] if state else []
        with self._read.begin() as conn:
            total = conn.execute(select(func.count()).select_from(jobs).where(*where)).scalar_one()
            rows = conn.execute(
                select(jobs)
                .where(*where)
                .order_by(jobs.c.created_at.desc(), jobs.c.id)
                .limit(limit)
                .offset(offset)
            ).all()
        return [Job.from_row(r) for r in rows], total

    def count(self, state: str) -> int:
        with self._read.begin() as conn:
            return conn.execute(
                select(func.count()).select_from(jobs).where(jobs.c.state == state)
            ).scalar_one()

    def position(self, job: Job) -> int:
        """How many queued jobs run before ``job`` (0 = next)."""
        with self._read.begin() as conn:
            return conn.execute(
                select(func.count())
                .select_from(jobs)
                .where(jobs.c.state == "queued", jobs.c.created_at < job.created_at)
            ).scalar_one()

    def mean_seconds(self, model: str, last: int = 20) -> float | None:
        """Mean wall time of the last ``last`` successful jobs of ``model``."""
        with self._read.begin() as conn:
            rows = conn.execute(
                select(jobs.c.started_at, jobs.c.finished_at)
                .where(jobs.c.model == model, jobs.c.state == "succeeded")
                .order_by(jobs.c.finished_at.desc())
                .limit(last)
            ).all()
        spans = [f - s for s, f in rows if s is not None and f is not None]
        return sum(spans) / len(spans) if spans else None

    def retry_after(self) -> int:
        """Seconds until a queued slot is likely free: one job's mean time, at least 1 s."""
        with self._read.begin() as conn:
            rows = conn.execute(
                select(jobs.c.started_at, jobs.c.finished_at)
                .where(jobs.c.state == "succeeded")
                .order_by(jobs.c.finished_at.desc())
                .limit(20)
            ).all()
        spans = [f - s for s, f in rows if s is not None and f is not None]
        mean = sum(spans) / len(spans) if spans else 5.0
        return max(1, round(mean / max(1, len(self.config.devices))))

    def cancel(self, job_id: str) -> Job | None:
        """Queued -> canceled at once; running -> cancel_requested (the worker stops at its next
        step). Finished jobs are left as they are. Returns the job after the change."""
        now = time.time()
        with self._write.begin() as conn:
            conn.execute(
                update(jobs)
                .where(jobs.c.id == job_id, jobs.c.state == "queued")
                .values(state="canceled", finished_at=now)
            )
            conn.execute(
                update(jobs)
                .where(jobs.c.id == job_id, jobs.c.state == "running")
                .values(cancel_requested=True)
            )
        return self.get(job_id)

    def delete(self, job_id: str) -> bool:
        """Remove a finished job's row and folder; False when it is not finished (or unknown)."""
        with self._write.begin() as conn:
            gone = conn.execute(
                delete(jobs).where(jobs.c.id == job_id, jobs.c.state.in_(FINISHED))
            ).rowcount
        if gone:
            shutil.rmtree(self.job_dir(job_id), ignore_errors=True)
        return bool(gone)

    # -- workers ---------------------------------------------------------------------------------

    def claim(self, worker: str, models: tuple[str, ...]) -> Job | None:
        """Take the oldest queued job of one of ``models``; None when there is none."""
        now = time.time()
        token = secrets.token_hex(8)
        oldest = (
            select(jobs.c.id)
            .where(jobs.c.state == "queued", jobs.c.model.in_(models))
            .order_by(jobs.c.created_at, jobs.c.id)
            .limit(1)
            .with_for_update(skip_locked=True)
            .scalar_subquery()
        )
        with self._write.begin() as conn:
            row = conn.execute(
                update(jobs)
                .where(jobs.c.id == oldest, jobs.c.state == "queued")
                .values(
                    state="running",
                    worker=worker,
                    claim=token,
                    started_at=now,
                    heartbeat_at=now,
                    attempts=jobs.c.attempts + 1,
                    stage=None,
                    stage_done=None,
                    stage_total=None,
                )
                .returning(*jobs.c)
            ).first()
        return Job.from_row(row) if row is not None else None

    def report(self, job: Job, stage: str, done: int, total: int) -> bool:
        """Record progress and the heartbeat; returns True when a cancel was requested.

        Raises:
            JobLost: the attempt no longer owns the job.
        """
        with self._write.begin() as conn:
            row = conn.execute(
                update(jobs)
                .where(jobs.c.id == job.id, jobs.c.claim == job.claim, jobs.c.state == "running")
                .values(stage=stage, stage_done=done, stage_total=total, heartbeat_at=time.time())
                .returning(jobs.c.cancel_requested)
            ).first()
        if row is None:
            raise JobLost(job.id)
        return bool(row[0])

    def heartbeat(self, worker: str) -> None:
        """Refresh the heartbeat of every job ``worker`` runs (a step may outlast the lease)."""
        with self._write.begin() as conn:
            conn.execute(
                update(jobs)
                .where(jobs.c.worker == worker, jobs.c.state == "running")
                .values(heartbeat_at=time.time())
            )

    def finish(
        self,
        job: Job,
        state: str,
        *,
        error: str | None = None,
        result: dict[str, Any] | None = None,
    ) -> bool:
        """running -> succeeded | failed | canceled for this attempt; False if it lost the job."""
        assert state in FINISHED
        with self._write.begin() as conn:
            done = conn.execute(
                update(jobs)
                .where(jobs.c.id == job.id, jobs.c.claim == job.claim, jobs.c.state == "running")
                .values(state=state, error=error, result=result, finished_at=time.time())
            ).rowcount
        return bool(done)

    def release(self, job: Job) -> bool:
        """running -> queued for this attempt (a graceful shutdown); the attempt is not counted."""
        with self._write.begin() as conn:
            done = conn.execute(
                update(jobs)
                .where(jobs.c.id == job.id, jobs.c.claim == job.claim, jobs.c.state == "running")
                .values(state="queued", claim=None, stage=None, attempts=jobs.c.attempts - 1)
            ).rowcount
        return bool(done)

    def requeue(self, *, stale_before: float | None = None) -> int:
        """Running jobs whose worker is gone -> queued (or failed after ``max_attempts``).

        Args:
            stale_before: only jobs whose heartbeat is older than this unix time; None = every
                running job (the embedded queue at start: no other server can be running them).
        Returns:
            how many jobs were re-queued or failed.
        """
        where = [jobs.c.state == "running"]
        if stale_before is not None:
            where.append(jobs.c.heartbeat_at < stale_before)
        limit = self.config.max_attempts
        with self._write.begin() as conn:
            rows = conn.execute(
                select(jobs.c.id, jobs.c.attempts, jobs.c.cancel_requested).where(*where)
            ).all()
            for job_id, attempts, canceled in rows:
                if canceled:
                    values: dict[str, Any] = {"state": "canceled", "finished_at": time.time()}
                elif attempts >= limit:
                    values = {
                        "state": "failed",
                        "finished_at": time.time(),
                        "error": INTERRUPTED.format(n=attempts),
                    }
                else:
                    values = {"state": "queued", "claim": None, "stage": None}
                conn.execute(update(jobs).where(jobs.c.id == job_id, *where).values(**values))
        return len(rows)

    def sweep(self) -> int:
        """At the start of an embedded server: drop job folders without a row and stale uploads."""
        with self._read.begin() as conn:
            known = {r[0] for r in conn.execute(select(jobs.c.id)).all()}
        return sweep_orphans(self.config.jobs_dir, self.config.uploads_dir, known)
