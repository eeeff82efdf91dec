"""Smoke test of benchmarks/streaming.py on the packaged demo model with tiny settings (a
subprocess, as a user runs it, so its command line cannot rot)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parent.parent / "benchmarks" / "streaming.py"


@pytest.mark.slow
def test_streaming_benchmark_prints_a_row_per_setting_and_writes_json(tmp_path: Path) -> None:
    proc = subprocess.run(
        [sys.executable, str(SCRIPT), "--steps", "2", "1", "--configs", "24:6:4", "--long-seconds",
         "4", "--clips", "1", "--clip-seconds", "3", "--threads", "1", "--out", str(tmp_path)],
        check=False, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "seam_ratio" in proc.stdout
    summary = json.loads((tmp_path / "streaming.json").read_text())
    assert [r["steps"] for r in summary["results"]] == [2, 1]  # one row per step count
    assert proc.stdout.count("24:6:4") == 2  # each row printed
    row = summary["results"][0]
    assert row["speed"]["frames"] == 100 and row["speed"]["ttff_s"] > 0
    assert set(row["quality"]["mean"]) >= {"mouth_corr_diff", "blink_rate_rel_diff", "seam_ratio"}
    assert "command" in summary
