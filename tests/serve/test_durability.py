"""kill -9 mid-job, restart, every job completes; two servers on one PostgreSQL queue."""

from __future__ import annotations

import re
import sqlite3
import time
from pathlib import Path

import av
import pytest

from .conftest import ServerProcess, files_under

pytestmark = pytest.mark.slow


def _frames(path: Path) -> int:
    with av.open(str(path)) as container:
        return sum(1 for _ in container.decode(video=0))


def test_kill_9_mid_job_then_restart_completes_every_job(tmp_path: Path, media) -> None:
    data = tmp_path / "data"
    server = ServerProcess(data, "--no-web").wait_ready()
    # decode_batch=2: several decode steps, so the kill can land while the mp4 is being written
    options = '{"num_steps": 3, "seed": 0, "decode_batch": 2}'
    ids = [server.submit(media["short"], options=options).json()["id"] for _ in range(3)]
    deadline = time.monotonic() + 300
    decoding = False
    while not decoding:
        assert time.monotonic() < deadline, server.tail()
        for job_id in ids:
            job = server.client.get(f"/v1/jobs/{job_id}").json()
            decoding = decoding or (job["state"] == "running" and job["stage"] == "decode")
        time.sleep(0.05)
    server.kill9()
    server.stop()
    # the job the kill interrupted, as the queue recorded it (a worker claims the next job the
    # moment one ends, so one is running whenever the kill lands before the last one ends)
    with sqlite3.connect(data / "queue.sqlite3") as db:
        running = [
            r[0] for r in db.execute("SELECT id FROM talkinghead_jobs WHERE state='running'")
        ]
    assert len(running) == 1, running
    victim = running[0]
    # nothing half-written under the final name: only the writer's hidden temp file may exist
    assert not (data / "jobs" / victim / "result.mp4").exists()
    leftovers = [p.name for p in (data / "jobs" / victim).glob(".*")]

    restarted = ServerProcess(data, "--no-web").wait_ready()
    try:
        done = [
            restarted.wait_state(job_id, ("succeeded", "failed", "canceled"), timeout=300)
            for job_id in ids
        ]
        assert [j["state"] for j in done] == ["succeeded"] * 3, done
        assert next(j for j in done if j["id"] == victim)["attempts"] == 2
        for job_id in ids:
            folder = data / "jobs" / job_id
            assert not list(folder.glob(".*")), list(folder.iterdir())
            assert _frames(folder / "result.mp4") == 15
        assert not list((data / "uploads").iterdir())
    finally:
        restarted.stop()
    print(
        f"\nkilled while {victim} ran; temp files left by the kill: {leftovers}; "
        "all 3 jobs completed after the restart"
    )


def test_two_servers_on_one_postgres_queue_run_each_job_once(
    tmp_path: Path, media, postgres_url: str
) -> None:
    from sqlalchemy import create_engine, delete

    from talkinghead.serve.db import jobs, metadata

    engine = create_engine(postgres_url)
    metadata.create_all(engine)
    with engine.begin() as conn:
        conn.execute(delete(jobs))
    engine.dispose()
    data = tmp_path / "shared-data"  # one job folder for both, as a network share would be
    flags = ("--no-web", "--db", postgres_url, "--lease", "10")
    servers = [ServerProcess(data, *flags, log=tmp_path / f"server{i}.log") for i in range(2)]
    try:
        for server in servers:
            server.wait_ready()
        ids = [servers[i % 2].submit(media["short"]).json()["id"] for i in range(4)]
        done = [
            servers[0].wait_state(job_id, ("succeeded", "failed"), timeout=240) for job_id in ids
        ]
        assert [j["state"] for j in done] == ["succeeded"] * 4, done
        assert all(j["attempts"] == 1 for j in done)
        logs = [s.log.read_text() for s in servers]
        runs = {
            job_id: sum(len(re.findall(rf"job {job_id} done", log)) for log in logs)
            for job_id in ids
        }
        assert set(runs.values()) == {1}, runs
        per_server = [sum(f"job {j} done" in log for j in ids) for log in logs]
        assert sum(per_server) == 4
        assert all(_frames(data / "jobs" / j / "result.mp4") == 15 for j in ids)
        assert not [p for p in files_under(data / "jobs") if p.name.startswith(".")]
    finally:
        for server in servers:
            server.stop()
    print(f"\ntwo servers on one PostgreSQL queue: jobs run per server {per_server}, each once")
