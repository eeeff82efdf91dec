"""The real server on loopback with the demo model: a job end to end, cancel, 429, concurrency."""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor

import av
import pytest

from .conftest import ServerProcess, files_under

pytestmark = pytest.mark.slow


def test_submit_poll_download_mp4(live: ServerProcess, media, tmp_path) -> None:
    response = live.submit(media["short"])
    assert response.status_code == 201, response.text
    job = response.json()
    assert response.headers["location"] == f"/v1/jobs/{job['id']}"
    assert job["state"] in ("queued", "running") and len(job["id"]) == 22
    seen_stages = set()
    deadline = time.monotonic() + 120
    while job["state"] not in ("succeeded", "failed", "canceled"):
        assert time.monotonic() < deadline, live.tail()
        time.sleep(0.1)
        job = live.client.get(f"/v1/jobs/{job['id']}").json()
        if job["stage"]:
            seen_stages.add(job["stage"])
    assert job["state"] == "succeeded", job
    assert job["result"]["frames"] == 15 and job["result"]["fps"] == 25
    assert job["result_url"] == f"/v1/jobs/{job['id']}/result"
    assert seen_stages <= {"prepare", "denoise", "decode"} and "decode" in seen_stages

    video = live.client.get(job["result_url"])
    assert video.status_code == 200 and video.headers["content-type"] == "video/mp4"
    path = tmp_path / "result.mp4"
    path.write_bytes(video.content)
    with av.open(str(path)) as container:
        codecs = {s.type: s.codec_context.name for s in container.streams}
        assert codecs == {"video": "h264", "audio": "aac"}
        frames = sum(1 for _ in container.decode(video=0))
    assert frames == 15
    # the job folder holds its inputs and the finished mp4, nothing half-written
    folder = live.data_dir / "jobs" / job["id"]
    names = sorted(p.relative_to(folder).as_posix() for p in files_under(folder))
    assert names == ["inputs/portrait.png", "inputs/speech.wav", "result.mp4"]


def test_cancel_stops_a_running_job_at_its_next_step(live: ServerProcess, media) -> None:
    job = live.submit(media["long"], options='{"num_steps": 50, "seed": 1}').json()
    running = live.wait_state(job["id"], ("running",), timeout=120)
    canceled_at = time.monotonic()
    answer = live.client.delete(f"/v1/jobs/{job['id']}")
    assert answer.status_code == 200 and answer.json()["state"] in ("running", "canceled")
    assert answer.json()["cancel_requested"] or answer.json()["state"] == "canceled"
    done = live.wait_state(job["id"], ("canceled", "succeeded", "failed"), timeout=60)
    assert done["state"] == "canceled", (running, done)
    assert time.monotonic() - canceled_at < 30
    assert live.client.get(f"/v1/jobs/{job['id']}/result").status_code == 409
    assert not (live.data_dir / "jobs" / job["id"] / "result.mp4").exists()
    assert not list((live.data_dir / "jobs" / job["id"]).glob(".*"))


def test_concurrent_submissions_polls_and_the_429(live: ServerProcess, media) -> None:
    # keep the worker busy so the submissions stay queued
    blocker = live.submit(media["long"], options='{"num_steps": 50}').json()["id"]
    live.wait_state(blocker, ("running",))

    started = time.monotonic()
    with ThreadPoolExecutor(20) as pool:
        answers = list(pool.map(lambda _: live.submit(media["short"]), range(20)))
    submit_seconds = time.monotonic() - started
    assert [a.status_code for a in answers] == [201] * 20, answers[0].text
    ids = [a.json()["id"] for a in answers]
    assert len(set(ids)) == 20
    assert submit_seconds < 60

    started = time.monotonic()
    with ThreadPoolExecutor(32) as pool:
        polls = list(pool.map(lambda i: live.client.get(f"/v1/jobs/{ids[i % 20]}"), range(100)))
    poll_seconds = time.monotonic() - started
    assert all(p.status_code == 200 for p in polls)
    assert poll_seconds < 20
    positions = sorted(live.client.get(f"/v1/jobs/{i}").json()["position"] for i in ids)
    assert positions == list(range(20))

    # fill the queue (24) and go one beyond: 429 with Retry-After, no job, no file
    before = len(list((live.data_dir / "jobs").iterdir()))
    extra = []
    for _ in range(10):
        answer = live.submit(media["short"])
        if answer.status_code != 201:
            break
        extra.append(answer.json()["id"])
    assert answer.status_code == 429, answer.text
    assert int(answer.headers["retry-after"]) >= 1
    assert "queue is full" in answer.json()["error"]
    assert len(list((live.data_dir / "jobs").iterdir())) == before + len(extra)
    assert not list((live.data_dir / "uploads").iterdir())

    for job_id in [*ids, *extra, blocker]:
        assert live.client.delete(f"/v1/jobs/{job_id}").status_code == 200
    for job_id in [*ids, *extra]:
        assert live.client.get(f"/v1/jobs/{job_id}").json()["state"] == "canceled"
    live.wait_state(blocker, ("canceled",), timeout=60)
    print(
        f"\n20 concurrent submissions: {submit_seconds:.2f} s; 100 concurrent polls: "
        f"{poll_seconds:.2f} s"
    )


def test_listing_models_health_and_delete(live: ServerProcess, media) -> None:
    models = live.client.get("/v1/models").json()
    assert models[0]["name"] == "demo" and models[0]["default"] is True
    # num_steps: null = the model's own (20 for the demo; a step-distilled model's N)
    assert models[0]["options"]["num_steps"] is None and models[0]["options"]["crop"] is False
    health = live.client.get("/healthz").json()
    assert health["status"] == "ok" and health["workers"] == 1

    page = live.client.get("/v1/jobs", params={"limit": 2, "offset": 0}).json()
    assert page["limit"] == 2 and len(page["jobs"]) <= 2 and page["total"] >= len(page["jobs"])
    finished = live.client.get("/v1/jobs", params={"state": "canceled", "limit": 1}).json()
    if finished["jobs"]:
        job_id = finished["jobs"][0]["id"]
        assert live.client.delete(f"/v1/jobs/{job_id}").json()["deleted"] is True
        assert live.client.get(f"/v1/jobs/{job_id}").status_code == 404
        assert not (live.data_dir / "jobs" / job_id).exists()
    assert live.client.get("/v1/jobs", params={"state": "bogus"}).status_code == 422
    assert live.client.get("/v1/nowhere").json()["error"].startswith("no such path")
