"""Smoke test of benchmarks/precision.py on the packaged demo model (CPU, seconds).

Run as a user runs it (a subprocess), so its command line cannot rot; checks the table, the JSON rows
and that the deviations are finite, non-zero and small (same random draws in every run).
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parent.parent / "benchmarks" / "precision.py"


def _run(*args: str) -> dict:
    proc = subprocess.run(
        [sys.executable, str(SCRIPT), *args],
        check=False,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "| bfloat16 | cast |" in proc.stdout
    return json.loads((Path(args[args.index("--out") + 1]) / "precision.json").read_text())


@pytest.mark.slow
def test_precision_demo_rows(tmp_path: Path) -> None:
    report = _run("--frames", "4", "--steps", "1", "--threads", "1", "--out", str(tmp_path))
    rows = report["rows"]
    assert [(r["precision"], r["mode"]) for r in rows] == [
        ("float32", "-"),
        ("bfloat16", "cast"),
        ("bfloat16", "autocast"),
    ]
    assert report["frames"] == 4 and report["steps"] == 1
    for r in rows[1:]:
        assert "error" not in r, r
        assert 0 < r["latent_mean_abs"] <= r["latent_max_abs"] < 1.0
        assert r["video_psnr_db"] is not None and 10.0 < r["video_psnr_db"] < 80.0
        assert r["sampling_s"] > 0
