"""The protocol end to end on a real face: 3DDFA landmarks align the ArcFace crops and drive the BAS
motion, an S3FD track (detector stubbed) feeds SyncNet, and the report states all of it."""

from __future__ import annotations

import hashlib
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from scipy.io import wavfile
from torch import Tensor, nn

import talkinghead.eval.features as features_module
from talkinghead.eval.evaluate import EvalOptions, evaluate_directory
from talkinghead.eval.networks import MetricNetworks, load_networks
from talkinghead.eval.report import render_html
from talkinghead.face.analysis import FaceAnalyzer
from talkinghead.media.video import VideoWriter

FRAMES, SIZE, SR = 30, 128, 16000


class _TinySync(nn.Module):
    """SyncNet's two calls on pooled inputs (the real towers are tested in test_networks)."""

    def __init__(self) -> None:
        super().__init__()
        self.lip, self.aud = nn.Linear(3, 1024), nn.Linear(13, 1024)

    def forward_lip(self, clips: Tensor) -> Tensor:  # (B, 3, 5, 224, 224)
        assert clips.shape[1:] == (3, 5, 224, 224)
        return self.lip(clips.mean(dim=(2, 3, 4)))

    def forward_aud(self, mfcc: Tensor) -> Tensor:  # (B, 1, 13, 20)
        return self.aud(mfcc.mean(dim=(1, 3)))


class _TinyArcFace(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.proj = nn.Linear(3 * 16, 512)

    def forward(self, faces: Tensor) -> Tensor:  # (N, 3, 112, 112) in [0, 1]
        assert faces.shape[1:] == (3, 112, 112)
        return self.proj(nn.functional.adaptive_avg_pool2d(faces, 4).flatten(1))


def _portrait_video(path: Path, portrait: Path, phase: float) -> None:
    image = cv2.cvtColor(cv2.imread(str(portrait)), cv2.COLOR_BGR2RGB)
    image = cv2.resize(image, (SIZE, SIZE), interpolation=cv2.INTER_AREA)
    rng = np.random.default_rng(int(phase * 10))
    audio = np.zeros(FRAMES * SR // 25, np.float32)
    for start in range(SR // 5, len(audio) - 800, SR // 3):
        audio[start : start + 800] = rng.normal(scale=0.3, size=800)
    wav = path.with_suffix(".tmp.wav")
    wavfile.write(wav, SR, (audio * 32767).astype(np.int16))
    with VideoWriter(path, fps=25, audio_path=wav) as writer:
        for t in range(FRAMES):
            shift = np.float32([[1, 0, 4 * np.sin(t / 4 + phase)], [0, 1, 2 * np.cos(t / 5)]])
            writer.write(cv2.warpAffine(image, shift, (SIZE, SIZE), borderMode=cv2.BORDER_REFLECT))
    wav.unlink()


@pytest.fixture(scope="module")
def portrait_set(tmp_path_factory: pytest.TempPathFactory, media_dir: Path) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("portraits")
    gen, ref = root / "gen", root / "ref"
    gen.mkdir()
    ref.mkdir()
    portrait = media_dir / "portraits" / "real_female_1.jpeg"
    _portrait_video(gen / "a.mp4", portrait, 0.3)
    _portrait_video(ref / "a.mp4", portrait, 0.0)
    return gen, ref


def test_protocol_on_a_real_face(
    portrait_set: tuple[Path, Path], media_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    gen, ref = portrait_set
    face = FaceAnalyzer.from_dir(media_dir / "face3d")
    # S3FD stand-in: syncnet_python keeps tracks of faces over 100 px, so a 104 x 112 box
    s3fd_box = np.array([[14.0, 10.0, 118.0, 122.0, 0.99]])
    calls = []

    def fake_s3fd(model: nn.Module, image: np.ndarray) -> np.ndarray:
        calls.append(image.shape)
        return s3fd_box

    monkeypatch.setattr(features_module, "detect_faces", fake_s3fd)
    torch.manual_seed(0)
    nets = MetricNetworks(
        models={"syncnet": _TinySync(), "arcface": _TinyArcFace(), "s3fd": nn.Linear(1, 1)},
        face=face,
    )
    result = evaluate_directory(
        gen, ref, networks=nets, options=EvalOptions(progress=False, csim_max_frames=8)
    )
    s = result.summary
    assert len(calls) == 2 * FRAMES  # every 25 fps frame of both videos
    row = s["videos"][0]
    assert row["sync_crop"] == f"S3FD track, frames 0-{FRAMES - 1} of {FRAMES} at 25 fps"
    assert row["csim_alignment"].startswith("5-point similarity")
    assert row["motion_source"].startswith("3DDFA landmarks")
    assert row["face_detector"] == "faceboxes"
    assert np.isfinite(row["LSE-C"]) and np.isfinite(row["CSIM"]) and 0 <= row["BAS"] <= 1
    assert result.features["generated"]["a"]["motion"].shape == (FRAMES, 48, 2)
    protocol = s["protocol"]
    assert protocol["LSE-C/LSE-D"]["face_tracks"] == {
        "generated": {"S3FD track": 1},
        "reference": {"S3FD track": 1},
    }
    assert protocol["CSIM"]["alignment"]["generated"] == {
        "5-point similarity to the ArcFace template (3DDFA landmarks)": 1
    }
    assert protocol["FID"]["weights"][0]["status"] == "not loaded"
    page = render_html(result)
    assert "Protocol" in page and "S3FD track" in page and "3DDFA landmarks" in page


def test_fallbacks_are_named_per_video(portrait_set: tuple[Path, Path]) -> None:
    # No S3FD and no 3DDFA: the face-analysis boxes go through syncnet_python's crop, CSIM uses
    # unaligned box crops, BAS the face box; each video says so.
    gen, _ = portrait_set
    nets = MetricNetworks(models={"syncnet": _TinySync(), "arcface": _TinyArcFace()})
    summary = evaluate_directory(
        gen, networks=nets, options=EvalOptions(progress=False, csim_max_frames=4)
    ).summary
    row = summary["videos"][0]
    assert row["sync_crop"].startswith("haar boxes (no sfd_face.pth)")
    assert row["csim_alignment"].startswith("square haar box crop")
    assert row["motion_source"] == "haar face box"


def test_small_s3fd_faces_make_no_track(
    portrait_set: tuple[Path, Path], media_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # syncnet_python drops tracks of faces under 100 px: the face-analysis boxes stand in.
    gen, _ = portrait_set
    face = FaceAnalyzer.from_dir(media_dir / "face3d")
    monkeypatch.setattr(features_module, "detect_faces", lambda m, im: face.detect(im)[:1])
    nets = MetricNetworks(models={"syncnet": _TinySync(), "s3fd": nn.Linear(1, 1)}, face=face)
    row = evaluate_directory(gen, networks=nets, options=EvalOptions(progress=False)).summary[
        "videos"
    ][0]
    assert row["sync_crop"] == (
        f"faceboxes boxes (no S3FD track (faces in {FRAMES} of {FRAMES} frames)), "
        f"frames 0-{FRAMES - 1} of {FRAMES} at 25 fps"
    )


def test_load_networks_finds_face3d_and_hashes_it(tmp_path: Path, media_dir: Path) -> None:
    (tmp_path / "face3d").symlink_to(media_dir / "face3d", target_is_directory=True)
    nets = load_networks(tmp_path)
    assert nets.face is not None and nets.face.regressor is not None
    detector = media_dir / "face3d" / "FaceBoxesProd.pth"
    expected = hashlib.sha256(detector.read_bytes()).hexdigest()
    assert nets.files["face3d detector"]["sha256"] == expected
    assert nets.missing["s3fd"]["status"] == "needs weights"
