"""End to end: ``talkinghead eval`` on a tiny synthetic set -> metrics.json + report.html."""

from __future__ import annotations

import json
from pathlib import Path

import av
import cv2
import numpy as np
import pytest
import torch

from talkinghead.cli import main

from .stubs import TinyI3D

FPS, SIZE, FRAMES, SR = 25, 64, 34, 16000


def _face_frame(t: int, shift: float, blink_at: tuple[int, ...]) -> np.ndarray:
    img = np.full((SIZE, SIZE, 3), 40, np.uint8)
    cx = int(32 + 4 * np.sin(2 * np.pi * t / 17 + shift))
    cv2.ellipse(img, (cx, 34), (20, 26), 0, 0, 360, (200, 160, 130), -1)
    closed = any(b <= t < b + 3 for b in blink_at)
    for ex in (cx - 8, cx + 8):
        if closed:
            cv2.line(img, (ex - 4, 26), (ex + 4, 26), (170, 130, 100), 1)
        else:
            cv2.circle(img, (ex, 26), 4, (255, 255, 255), -1)
            cv2.circle(img, (ex, 26), 2, (10, 10, 10), -1)
    cv2.ellipse(img, (cx, 46), (7, 2 + t % 4), 0, 0, 360, (120, 40, 40), -1)
    return img


def _write_video(path: Path, shift: float, blink_at: tuple[int, ...]) -> None:
    rng = np.random.default_rng(int(shift * 10))
    with av.open(str(path), "w") as out:
        vs = out.add_stream("mpeg4", rate=FPS)
        vs.width = vs.height = SIZE
        vs.pix_fmt = "yuv420p"
        aus = out.add_stream("aac", rate=SR)
        aus.layout = "mono"
        for t in range(FRAMES):
            out.mux(
                vs.encode(
                    av.VideoFrame.from_ndarray(_face_frame(t, shift, blink_at), format="rgb24")
                )
            )
        audio = np.zeros(FRAMES * SR // FPS, np.float32)
        for start in range(SR // 5, len(audio) - 800, SR // 3):  # syllable-like bursts
            audio[start : start + 800] = rng.normal(scale=0.3, size=800)
        for i in range(0, len(audio), 1024):
            chunk = np.zeros((1, 1024), np.float32)
            chunk[0, : len(audio[i : i + 1024])] = audio[i : i + 1024]
            frame = av.AudioFrame.from_ndarray(chunk, format="fltp", layout="mono")
            frame.sample_rate, frame.pts = SR, i
            out.mux(aus.encode(frame))
        out.mux(vs.encode(None))
        out.mux(aus.encode(None))


@pytest.fixture(scope="module")
def synthetic_set(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("evalset")
    gen, ref = root / "gen", root / "ref"
    gen.mkdir()
    ref.mkdir()
    for i, name in enumerate(("a", "b", "c")):
        _write_video(gen / f"{name}.mp4", shift=0.5 * i + 0.3, blink_at=(8, 24))
        _write_video(ref / f"{name}.mp4", shift=0.5 * i, blink_at=(10,))
    (gen / "broken.mp4").write_bytes(b"not a video at all")
    return gen, ref


def test_cli_eval_writes_json_and_html(
    synthetic_set: tuple[Path, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("TALKINGHEAD_EVAL_WEIGHTS", raising=False)
    gen, ref = synthetic_set
    out = tmp_path / "report"
    code = main(
        [
            "eval",
            str(gen),
            "--reference",
            str(ref),
            "--out",
            str(out),
            "--no-progress",
            "--device",
            "cpu",
        ]
    )
    assert code == 0
    summary = json.loads((out / "metrics.json").read_text())
    metrics = summary["metrics"]
    for name in ("FID", "FVD16", "FVD32", "LSE-C", "LSE-D", "CSIM"):
        assert metrics[name]["status"] == "needs weights", name
        assert metrics[name]["get_it_from"]
    for name in ("BAS", "Blink/s", "PSNR", "SSIM"):
        assert metrics[name]["n"] == 3 and metrics[name]["value"] is not None, name
    assert 0.0 <= metrics["BAS"]["value"] <= 1.0
    assert metrics["Blink/s"]["value"] == pytest.approx(2 / (FRAMES / FPS), rel=0.01)
    assert summary["reference_metrics"]["Blink/s"]["value"] == pytest.approx(
        1 / (FRAMES / FPS), rel=0.01
    )
    assert [v["name"] for v in summary["videos"]] == ["a", "b", "c"]
    assert [Path(s["path"]).name for s in summary["skipped"]] == ["broken.mp4"]
    page = (out / "report.html").read_text()
    assert "needs weights" in page and "<svg" in page and "broken.mp4" in page
    assert len(list((out / "cache").glob("*.npz"))) == 6

    # Resumable: a second run reads the cache instead of re-extracting.
    before = {p: p.stat().st_mtime_ns for p in (out / "cache").glob("*.npz")}
    assert (
        main(["eval", str(gen), "--reference", str(ref), "--out", str(out), "--no-progress"]) == 0
    )
    assert {p: p.stat().st_mtime_ns for p in (out / "cache").glob("*.npz")} == before


def test_cli_eval_uses_available_weights(
    synthetic_set: tuple[Path, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    gen, ref = synthetic_set
    weights = tmp_path / "weights"
    weights.mkdir()
    torch.manual_seed(0)
    torch.jit.script(TinyI3D()).save(str(weights / "i3d_torchscript.pt"))
    monkeypatch.setenv("TALKINGHEAD_EVAL_WEIGHTS", str(weights))
    out = tmp_path / "report"
    assert (
        main(["eval", str(gen), "--reference", str(ref), "--out", str(out), "--no-progress"]) == 0
    )
    metrics = json.loads((out / "metrics.json").read_text())["metrics"]
    assert metrics["FVD16"]["n"] == 6 and metrics["FVD16"]["value"] >= 0  # 2 clips x 3 videos
    assert metrics["FVD32"]["n"] == 3  # one 32-frame clip per video
    assert metrics["FID"]["status"] == "needs weights"


def test_cli_eval_missing_directory(tmp_path: Path) -> None:
    assert (
        main(["eval", str(tmp_path / "nope"), "--out", str(tmp_path / "o"), "--no-progress"]) == 2
    )


def test_cli_eval_help_lists_metrics_and_weights(capsys: pytest.CaptureFixture) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["eval", "--help"])
    assert exit_info.value.code == 0
    text = capsys.readouterr().out
    for needle in ("FID", "LSE-C", "CSIM", "BAS", "syncnet_v2.model", "sfd_face.pth", "face3d/"):
        assert needle in text, needle
