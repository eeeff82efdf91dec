"""`talkinghead demo`: the packaged model, portrait and speech make an mp4 end to end, offline."""

from __future__ import annotations

import json
from pathlib import Path

import av
import cv2
import numpy as np
import pytest
from scipy.io import wavfile

from talkinghead.cli import main
from talkinghead.demo import DEMO_DIR, FACE_FILE, PORTRAIT, SPEECH, KnownFace, demo_pipeline
from talkinghead.media.image import load_portrait
from talkinghead.model_index import LEGACY_FILE, read_model_index

MAX_PACKAGE_BYTES = 40 * 1024 * 1024  # every shipped model together (issue #13)


def test_packaged_assets_are_small_and_consistent() -> None:
    files = [p for p in DEMO_DIR.rglob("*") if p.is_file()]
    assert sum(p.stat().st_size for p in files) <= MAX_PACKAGE_BYTES
    index = read_model_index(DEMO_DIR / "model")
    assert index.audio_features == "logmel" and int(index.config["resolution"]) == 64
    for component in ("flow_ae", "pose", "blink", "unet"):
        assert (DEMO_DIR / "model" / component / "model.safetensors").is_file()
    rate, speech = wavfile.read(DEMO_DIR / SPEECH)
    assert rate == 16000 and speech.ndim == 1 and 3 * rate <= len(speech) <= 8 * rate
    face = json.loads((DEMO_DIR / FACE_FILE).read_text())
    x0, y0, x1, y1 = face["box"][:4]
    assert 0 <= x0 < x1 <= 64 and 0 <= y0 < y1 <= 64 and len(face["pose"]) == 6


def test_known_face_rejects_other_images() -> None:
    face = KnownFace.from_json(DEMO_DIR / FACE_FILE)
    assert face.analyze(np.zeros((64, 64, 3), np.uint8)).detector == "known"
    with pytest.raises(ValueError, match="64x64"):
        face.analyze(np.zeros((32, 48, 3), np.uint8))


def test_demo_pipeline_needs_logmel_model(tmp_path: Path) -> None:
    (tmp_path / "model").mkdir()
    (tmp_path / "model" / LEGACY_FILE).write_text(
        json.dumps({"format": "talkinghead", "version": 1, "resolution": 64})
    )
    with pytest.raises(ValueError, match="log-mel"):
        demo_pipeline(tmp_path)


def test_demo_command_writes_mp4(tmp_path: Path) -> None:
    out = tmp_path / "demo.mp4"
    assert main(["demo", "-o", str(out), "--steps", "2", "--seed", "3", "-q"]) == 0
    rate, speech = wavfile.read(DEMO_DIR / SPEECH)
    expected_frames = round(len(speech) / rate * 25)
    with av.open(str(out)) as container:
        video = container.streams.video[0]
        assert container.streams.audio, "the demo video has no audio track"
        assert (video.codec_context.width, video.codec_context.height) == (64, 64)
        frames = [f.to_ndarray(format="rgb24") for f in container.decode(video=0)]
    assert len(frames) == expected_frames
    assert np.std(np.stack(frames).astype(np.float32)) > 5.0  # an image, not a blank frame
    assert main(["demo", "-o", str(tmp_path / "missing" / "x.mp4"), "--steps", "1", "-q"]) == 2


def test_demo_runs_the_packaged_diffused_heads(tmp_path: Path) -> None:
    """The family runs with no download: the packaged 64-px Diffused Heads (float16 on disk) speaks
    the demo clip, at 7 ancestral steps (the fewest the official schedule allows) to stay near a
    minute on CPU."""
    index = read_model_index(DEMO_DIR / "diffused_heads")
    assert index.family == "diffused-heads" and index.config["diffusion"]["prediction"] == "v"
    out = tmp_path / "dh.mp4"
    assert main(["demo", "--model", "diffused-heads-demo", "-o", str(out), "--steps", "7", "-q"]) == 0
    rate, speech = wavfile.read(DEMO_DIR / SPEECH)
    with av.open(str(out)) as container:
        assert container.streams.audio
        frames = np.stack([f.to_ndarray(format="rgb24") for f in container.decode(video=0)])
    assert frames.shape == (round(len(speech) / rate * 25), 128, 128, 3)
    portrait = np.asarray(load_portrait(DEMO_DIR / PORTRAIT), np.float32)
    first = cv2.resize(frames[0], (64, 64), interpolation=cv2.INTER_AREA).astype(np.float32)
    assert np.abs(first - portrait).mean() < 25  # the demo person, not noise
    assert main(["demo", "--model", "dawn-128", "-o", str(tmp_path / "x.mp4"), "-q"]) == 2


def test_demo_assets_are_reproducible(tmp_path: Path) -> None:
    from talkinghead.demo import make_demo_assets

    paths = make_demo_assets(tmp_path, seconds=0.4, voice="formant")
    assert {p.name for p in paths.values()} == {PORTRAIT, SPEECH, FACE_FILE}
    rate, speech = wavfile.read(paths["speech"])
    assert rate == 16000 and len(speech) == 6400
