"""Smoke test of benchmarks/diffused_heads_speed.py at 32 px without the official checkout (which the
repository never holds; its path is exercised by hand, see the script's docstring)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

BENCH = Path(__file__).resolve().parent.parent / "benchmarks" / "diffused_heads_speed.py"


def _run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, str(BENCH), *args],
        check=False,
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_rows_table_and_json(tmp_path: Path, golden_dir: Path) -> None:
    proc = _run(
        *("--config", "golden", "--size", "32", "--frames", "2", "--steps", "7"),
        *("--fast-steps", "3", "--threads", "1", "--golden-dir", str(golden_dir)),
        *("--clips", "2", "--official-order", "--out", str(tmp_path)),
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    rows = json.loads((tmp_path / "diffused_heads_speed.json").read_text())["results"]
    assert [(r["impl"], r["sampler"], r["steps"], r["clips"]) for r in rows] == [
        ("ours", "ancestral", 7, 1),
        ("ours-official-order", "ancestral", 7, 1),
        ("ours", "ancestral", 7, 2),
        ("ours", "ddim", 3, 1),
        ("ours", "dpmpp-2m", 3, 1),
    ]
    assert rows[2]["sec_per_frame"] == rows[2]["seconds"] / 4  # 2 frames of 2 clips
    assert rows[0]["speedup"] == 1.0 and "dpmpp-2m" in proc.stdout


def test_a_folder_that_is_not_the_official_checkout_is_refused(tmp_path: Path) -> None:
    proc = _run("--official", str(tmp_path), "--frames", "3")
    assert proc.returncode != 0 and "not a train-branch checkout" in proc.stderr
