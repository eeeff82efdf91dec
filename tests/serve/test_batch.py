"""``talkinghead batch``: resumable, per-item errors in the report, torchrun shards, Ray actors."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import av
import pytest

from talkinghead.cli import main
from talkinghead.demo import DEMO_DIR, PORTRAIT
from talkinghead.serve.batch import BatchError, read_items, run_batch

pytestmark = pytest.mark.slow


def _jobs(tmp_path: Path, media, count: int, *, bad: bool = False) -> Path:
    speech = Path(media["short"])
    lines = [
        json.dumps(
            {"image": str(DEMO_DIR / PORTRAIT), "audio": str(speech), "seed": i, "num_steps": 2}
        )
        for i in range(count)
    ]
    if bad:
        text = tmp_path / "notes.wav"
        text.write_text("this is text, not audio\n" * 20)
        lines.append(
            json.dumps({"image": str(DEMO_DIR / PORTRAIT), "audio": text.name, "output": "bad.mp4"})
        )
    path = tmp_path / "jobs.jsonl"
    path.write_text("\n".join(lines) + "\n")
    return path


def _report(out: Path, name: str = "report.jsonl") -> list[dict]:
    return [json.loads(line) for line in (out / name).read_text().splitlines()]


def _frames(path: str) -> int:
    with av.open(path) as container:
        return sum(1 for _ in container.decode(video=0))


def test_batch_is_resumable_and_records_failures(tmp_path: Path, media) -> None:
    jobs, out = _jobs(tmp_path, media, 2, bad=True), tmp_path / "out"
    assert main(["batch", str(jobs), "-o", str(out), "-q"]) == 1  # one item failed
    first = _report(out)
    assert [r["status"] for r in first] == ["done", "done", "failed"]
    assert "not decodable" in first[2]["error"] or "decode" in first[2]["error"]
    assert all(_frames(r["output"]) == 15 for r in first[:2])
    assert not (out / "bad.mp4").exists() and not list(out.glob(".*"))

    again = run_batch(jobs, out, progress=False)
    assert (again.done, again.skipped, again.failed) == (0, 2, 1)
    assert [r["status"] for r in _report(out)] == ["skipped", "skipped", "failed"]


def test_csv_lists_and_their_errors(tmp_path: Path, media) -> None:
    csv = tmp_path / "jobs.csv"
    csv.write_text(f"image,audio,seed,motion_scale\n{DEMO_DIR / PORTRAIT},{media['short']},3,0.5\n")
    (item,) = read_items(csv, tmp_path / "out", model="demo", steps=2)
    assert item.options == {"seed": 3, "motion_scale": 0.5, "num_steps": 2}
    assert item.output.endswith(".mp4") and Path(item.output).parent == tmp_path / "out"
    (tmp_path / "bad.csv").write_text("image\nx.png\n")
    with pytest.raises(BatchError, match="'audio' column"):
        read_items(tmp_path / "bad.csv", tmp_path, model="demo", steps=None)
    text = tmp_path / "jobs.txt"
    text.write_text("x")
    with pytest.raises(BatchError, match=".csv or a .jsonl"):
        read_items(text, tmp_path, model="demo", steps=None)


def test_torchrun_ranks_take_their_shards(tmp_path: Path, media) -> None:
    jobs, out = _jobs(tmp_path, media, 4), tmp_path / "out"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc_per_node=2",
        "-m",
        "talkinghead",
        "batch",
        str(jobs),
        "-o",
        str(out),
        "-q",
    ]
    done = subprocess.run(cmd, check=False, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    report = _report(out)
    assert [r["index"] for r in report] == [0, 1, 2, 3]
    assert [r["status"] for r in report] == ["done"] * 4
    assert not list(out.glob("report.rank*"))
    assert all(_frames(r["output"]) == 15 for r in report)


def test_ray_local_cluster_with_two_workers(tmp_path: Path, media) -> None:
    pytest.importorskip("ray")
    jobs, out = _jobs(tmp_path, media, 2), tmp_path / "out"
    summary = run_batch(jobs, out, ray_address="local", ray_workers=2, progress=False)
    assert (summary.done, summary.failed) == (2, 0)
    assert all(_frames(r["output"]) == 15 for r in _report(out))
