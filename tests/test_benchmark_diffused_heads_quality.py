"""benchmarks/diffused_heads_quality.py, diffused_heads_drift.py and diffused_heads_probe.py on a tiny random model and a
tiny synthetic set: their rows, tables and JSON (the numbers of random weights mean nothing)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from diffused_heads.tiny import write_tiny_model_dir

from talkinghead.data.synth.clips import write_synth_dataset

BENCHMARKS = Path(__file__).resolve().parent.parent / "benchmarks"


@pytest.fixture(scope="module")
def model_and_data(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("dh-bench")
    data = root / "data"
    write_synth_dataset(
        data,
        num_clips=2,
        seconds=1.2,
        resolution=64,
        voice="formant",
        video=False,
        progress=False,
        test_fraction=0.5,
    )
    return write_tiny_model_dir(root / "model"), data


def _run(script: str, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, str(BENCHMARKS / script), *args],
        check=False,
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_quality_rows_against_the_reference(model_and_data, tmp_path: Path) -> None:
    model, data = model_and_data
    proc = _run(
        "diffused_heads_quality.py",
        *("--model", str(model), "--data", str(data), "--clips", "1", "--seconds", "0.4"),
        *("--reference", "ancestral:8", "--runs", "ddim:3", "dpmpp-2m:3"),
        *("--threads", "1", "--out", str(tmp_path)),
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    result = json.loads((tmp_path / "diffused_heads_quality.json").read_text())
    summary = {row["run"]: row for row in result["summary"]}
    assert list(summary) == ["reference", "reference, other seed", "ddim:3", "dpmpp-2m:3"]
    assert summary["reference"]["psnr_vs_reference"] is None
    assert summary["reference"]["speedup"] == 1.0
    assert all(0 < summary[r]["psnr_vs_reference"] < 60 for r in list(summary)[1:])
    assert all(row["frames"] == 10 for row in result["rows"])
    assert "dpmpp-2m:3" in proc.stdout and result["machine"]["threads"] == 1
    bad = _run(
        "diffused_heads_quality.py", "--model", str(model), "--data", str(data), "--runs", "ddim"
    )
    assert bad.returncode == 2 and "SAMPLER:STEPS" in bad.stderr


def test_drift_segments_with_and_without_stabilize(model_and_data, tmp_path: Path) -> None:
    model, data = model_and_data
    proc = _run(
        "diffused_heads_drift.py",
        *("--model", str(model), "--data", str(data), "--stabilize", "0", "3"),
        *("--steps", "2", "--segment-seconds", "0.4", "--threads", "1", "--out", str(tmp_path)),
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    result = json.loads((tmp_path / "diffused_heads_drift.json").read_text())
    runs = result["results"]
    assert [r["stabilize"] for r in runs] == [0, 3] and runs[0]["frames"] == 30
    assert [s["start_s"] for s in runs[0]["segments"]] == [0.0, 0.4, 0.8]
    first = runs[0]["segments"][0]
    assert first["sharpness"] > 0 and first["colour_shift"] >= 0
    assert runs[0]["segments"] != runs[1]["segments"]  # re-anchoring changes the frames


@pytest.mark.parametrize("prediction", ["eps", "v"])
def test_probe_rows_under_true_conditions(model_and_data, tmp_path: Path, prediction: str) -> None:
    model, data = model_and_data
    if prediction == "v":
        model = write_tiny_model_dir(tmp_path / "model", prediction="v")
    proc = _run(
        "diffused_heads_probe.py",
        *("--model", str(model), "--data", str(data), "--frame", "5", "--autoregressive", "3"),
        *("--seeds", "2", "--threads", "1", "--out", str(tmp_path)),
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    rows = json.loads((tmp_path / "diffused_heads_probe.json").read_text())
    assert list(rows["one_step"]) == list(rows["ddim_from"]) == ["50", "300", "600", "900", "999"]
    assert list(rows["sampler"]) == ["ancestral:20", "ancestral:100", "ddim:20", "dpmpp-2m:20"]
    assert len(rows["autoregressive"]) == 3 and 0 < rows["copy_previous"] < 60
    assert "copy the previous true frame" in proc.stdout
    bad = _run(
        "diffused_heads_probe.py", "--model", str(model), "--data", str(data), "--frame", "1"
    )
    assert bad.returncode == 2 and "--frame" in bad.stderr
