"""Smoke tests of the benchmark scripts on the tiny presets (CPU, seconds).

The scripts are run as a user runs them (subprocesses), so their command lines cannot rot. The
official-code path needs a checkout that the repository never contains; it is exercised by hand
(see benchmarks/RESULTS.md).
"""

from __future__ import annotations

import importlib
import json
import subprocess
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parent.parent / "benchmarks"


def _run(script: str, *args: str, cwd: Path | None = None) -> None:
    proc = subprocess.run(
        [sys.executable, str(BENCH / script), *args],
        check=False,
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]


def test_rotary_micro_benchmark(tmp_path: Path) -> None:
    _run("rotary.py", "--threads", "1", "--repeats", "2", "--out", str(tmp_path))
    report = json.loads((tmp_path / "rotary.json").read_text())
    (row,) = report["rows"]
    assert row["threads"] == 1 and row["real_ms"] > 0 and row["complex_ms"] > 0
    assert "command" in report and "machine" in report


@pytest.mark.slow
def test_generate_tiny_rows_and_table(tmp_path: Path, golden_dir: Path) -> None:
    _run(
        "generate.py",
        "--presets",
        "tiny",
        "--frames",
        "6",
        "--stages",
        "ddim",
        "decode",
        "--impls",
        "ours",
        "ours-faithful",
        "official",
        "--steps",
        "1",
        "--threads",
        "1",
        "--golden-dir",
        str(golden_dir),
        "--no-plot",
        "--out",
        "out",  # relative to the caller's directory, not to the workers'
        cwd=tmp_path,
    )
    report = json.loads((tmp_path / "out" / "generate.json").read_text())
    rows = report["rows"]
    # official is skipped without --official; 2 impls x 2 stages
    assert sorted((r["impl"], r["stage"]) for r in rows) == [
        ("ours", "ddim"),
        ("ours", "decode"),
        ("ours-faithful", "ddim"),
        ("ours-faithful", "decode"),
    ]
    for r in rows:
        assert "error" not in r, r
        assert r["wall_s"] > 0 and r["process_peak_rss_mib"] > 0 and r["call_peak_rss_mib"] >= 0
        assert r["frames"] == 6 and r["steps"] == 1
    assert report["equality"] == [] and report["ratios"] == []


@pytest.mark.slow
def test_attention_micro_benchmark(tmp_path: Path) -> None:
    _run(
        "attention.py",
        "--frames",
        "8",
        "24",
        "--size",
        "2",
        "--dim",
        "8",
        "--threads",
        "1",
        "--out",
        str(tmp_path),
    )
    report = json.loads((tmp_path / "attention.json").read_text())
    assert {(r["mode"], r["frames"]) for r in report["rows"]} == {
        ("local", 8),
        ("local", 24),
        ("full", 8),
        ("full", 24),
    }
    assert all("error" not in r and r["wall_s"] > 0 for r in report["rows"])
    assert len(report["summary"]) == 2


def test_generate_hands_workers_absolute_paths(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    # workers run in benchmarks/: a relative --out or --official given by the caller must not be
    # resolved there (the saved outputs of --check-frames went to benchmarks/<out> and failed)
    monkeypatch.syspath_prepend(str(BENCH))
    monkeypatch.chdir(tmp_path)
    generate = importlib.import_module("generate")
    args = generate.parse_args(["--out", "out", "--official", "dawn"])
    assert args.out == tmp_path / "out" and args.official == tmp_path / "dawn"


@pytest.mark.slow
def test_difftalk_speed_tiny_rows(tmp_path: Path) -> None:
    _run(
        "difftalk_speed.py", "--preset", "tiny", "--steps", "2", "1", "--frames", "3",
        "--batch", "2", "--threads", "1", "--out", str(tmp_path),
    )  # fmt: skip
    report = json.loads((tmp_path / "difftalk_speed_tiny_cpu.json").read_text())
    assert [r["steps"] for r in report["rows"]] == [2, 1]
    for r in report["rows"]:
        assert r["frames"] == 3 and r["fps"] > 0
        assert r["encoder_calls"] == 0, "the reference latent is encoded once, in prepare"


SMALLEST = ("--frames", "6", "--steps", "1", "--threads", "1")  # a tiny DDIM call, one thread


@pytest.mark.slow
def test_load_benchmark_rows_and_table(tmp_path: Path, golden_dir: Path) -> None:
    # ours only (the official code needs a checkout) and no demo rows, to stay short; the busy
    # condition starts and stops its busy-loop child itself
    _run(
        "load.py",
        *("--presets", "tiny", "--impls", "ours", *SMALLEST, "--repeats", "2"),
        *("--demo-steps", "0", "--settle", "0"),
        *("--golden-dir", str(golden_dir), "--out", str(tmp_path)),
    )
    report = json.loads((tmp_path / "load.json").read_text())
    rows = report["rows"]
    assert [(r["condition"], r["repeat"]) for r in rows] == [
        ("quiet", 0),
        ("busy", 0),
        ("quiet", 1),
        ("busy", 1),
    ]
    for r in rows:
        assert "error" not in r, r
        assert r["wall_s"] > 0 and r["cpu_s"] > 0 and r["load_before"] >= 0
        assert r["minor_faults"] >= 0
        assert r["wait"] == "passive" and r["threads"] == 1
    assert any("busy / quiet" in line for line in report["ratios"])
    assert "| ddim | tiny | ours | busy | 1 | passive | 2 |" in (tmp_path / "load.md").read_text()


@pytest.mark.slow
def test_profile_step_counts_the_flash_kernel(tmp_path: Path, golden_dir: Path) -> None:
    out = tmp_path / "profile.json"
    _run(
        "profile_step.py",
        *("--preset", "tiny", *SMALLEST, "--golden-dir", str(golden_dir), "--out", str(out)),
    )
    report = json.loads(out.read_text())
    # tiny UNet at 6 frames: 6 temporal layers + the mid spatial attention, one flash call each
    assert report["attention_kernels"] == {"aten::_scaled_dot_product_flash_attention_for_cpu": 7.0}
    assert report["kernel_calls_per_step"] > 0 and report["ops"]
