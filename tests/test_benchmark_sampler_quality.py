"""Smoke test of benchmarks/sampler_quality.py: golden mode and model mode on the packaged demo
model (CPU, seconds).

Run as a user runs it (a subprocess), so its command line cannot rot. A run with the reference's own
sampler and step count must land exactly on the reference (same x_T, same motion); a different one
must not.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parent.parent / "benchmarks" / "sampler_quality.py"
DEMO_MODEL = (
    Path(__file__).resolve().parent.parent / "src" / "talkinghead" / "assets" / "demo" / "model"
)


def _run(out: Path, *args: str) -> tuple[str, dict]:
    proc = subprocess.run(
        [sys.executable, str(SCRIPT), *args, "--threads", "1", "--out", str(out)],
        check=False,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    return proc.stdout, json.loads((out / "sampler_quality.json").read_text())


def _check_runs(rows: list[dict]) -> None:
    same, other = rows
    assert (same["sampler"], same["steps"]) == ("ddim", 2)
    assert same["max_abs"] == 0.0 and same["rms"] == 0.0
    assert other["sampler"] == "dpmpp-2m" and 0 < other["rms"] <= other["max_abs"]
    assert 0 < other["rel_rms"] < 10 and other["wall_s"] > 0


@pytest.mark.slow
@pytest.mark.parametrize(
    "source", [["--demo"], ["--model", str(DEMO_MODEL)]], ids=["demo", "model"]
)
def test_model_mode_same_noise_and_psnr(tmp_path: Path, source: list[str]) -> None:
    # 2 frames of audio, 2 reference steps
    stdout, report = _run(
        tmp_path, *source, "--frames", "2", "--ref-steps", "2", "--runs", "ddim:2", "dpmpp-2m:1"
    )
    assert "video PSNR dB" in stdout and "| ddim | 2 |" in stdout
    assert report["frames"] == 2 and report["reference"]["steps"] == 2
    _check_runs(report["runs"])
    same, other = report["runs"]
    assert same["video_psnr_db"] is None  # identical video
    assert other["video_psnr_db"] is not None and 5.0 < other["video_psnr_db"] < 100.0


@pytest.mark.slow
def test_golden_mode_unchanged(tmp_path: Path, golden_dir: Path) -> None:
    stdout, report = _run(
        tmp_path,
        "--golden-dir",
        str(golden_dir),
        "--frames",
        "2",
        "--ref-steps",
        "2",
        "--runs",
        "ddim:2",
        "dpmpp-2m:1",
    )
    assert "PSNR" not in stdout
    assert report["frames"] == 2
    _check_runs(report["runs"])
    assert all("video_psnr_db" not in r for r in report["runs"])


def test_image_without_model_is_refused(tmp_path: Path) -> None:
    proc = subprocess.run(
        [sys.executable, str(SCRIPT), "--image", "x.png", "--out", str(tmp_path)],
        check=False,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode != 0 and "--demo or --model" in proc.stderr
