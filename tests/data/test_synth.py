"""Synthetic talking faces: determinism, mouth follows speech, blinks, layout, resume, CLI."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from talkinghead import cli
from talkinghead.data.clip_writer import held_out_split
from talkinghead.data.layout import ClipReader, read_manifest
from talkinghead.data.synth.clips import (
    blink_openness,
    clip_style,
    info_style,
    synthesize_clip,
    write_synth_dataset,
)
from talkinghead.data.synth.voice import (
    espeak_available,
    formant_speech,
    loudness_envelope,
    synthesize_speech,
)

RES = 64


@pytest.fixture(scope="module")
def clip():
    return synthesize_clip(7, 2.0, RES, voice="formant")


@pytest.fixture(scope="module")
def dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("synth")
    write_synth_dataset(
        root, num_clips=2, seconds=2.0, resolution=RES, seed=3, voice="formant", progress=False
    )
    return root


def test_clip_shapes_and_ranges(clip) -> None:
    f = 50
    assert clip.frames.shape == (f, RES, RES, 3) and clip.frames.dtype == np.uint8
    assert clip.audio.shape == (32000,) and clip.audio.dtype == np.float32
    assert clip.pose.shape == (f, 6) and clip.eye.shape == (f, 2) and clip.bbox.shape == (f, 6)
    assert clip.mouth_box.shape == (f, 4) and clip.mouth_open.shape == (f,)
    assert clip.blink.shape == (f,)
    assert np.abs(clip.pose[:, :3]).max() <= 25
    assert np.allclose(clip.pose[:, 3], 4.79e-4, rtol=0.1)
    assert np.abs(clip.pose[:, 4] - 56.5).max() < 8 and np.abs(clip.pose[:, 5] - 64.9).max() < 8
    assert ((clip.eye > 0.04) & (clip.eye < 0.4)).all()
    assert (clip.bbox[:, 4:] == RES).all()
    assert (clip.bbox[:, 0] >= 0).all() and (clip.bbox[:, 1] <= RES).all()
    # the mouth lies inside the face, in its lower half
    x0, y0, x1, y1 = clip.mouth_box.T
    assert (x0 > clip.bbox[:, 0]).all() and (x1 < clip.bbox[:, 1]).all()
    assert (y0 > (clip.bbox[:, 2] + clip.bbox[:, 3]) / 2).all() and (y1 < clip.bbox[:, 3]).all()


def test_same_seed_same_clip_other_seed_differs(clip) -> None:
    again = synthesize_clip(7, 2.0, RES, voice="formant")
    assert np.array_equal(again.frames, clip.frames)
    assert np.array_equal(again.audio, clip.audio)
    assert np.array_equal(again.pose, clip.pose)
    other = synthesize_clip(8, 2.0, RES, voice="formant")
    assert not np.array_equal(other.frames[0], clip.frames[0])
    assert not np.allclose(other.audio, clip.audio)


def test_voice_is_deterministic_and_auto_uses_espeak_when_installed() -> None:
    a, name = synthesize_speech(1.5, np.random.default_rng(4))
    b, _ = synthesize_speech(1.5, np.random.default_rng(4))
    assert name == ("espeak-ng" if espeak_available() else "formant")
    assert a.shape == (24000,) and np.array_equal(a, b)
    assert 0.5 < np.abs(a).max() <= 1.0


@pytest.mark.parametrize("voice", ["formant", "auto"])
def test_mouth_follows_the_speech_envelope(voice: str) -> None:
    c = synthesize_clip(11, 4.0, 32, voice=voice)
    envelope = loudness_envelope(c.audio, c.frames.shape[0])
    assert np.corrcoef(envelope, c.mouth_open)[0, 1] > 0.8
    # the drawn mouth opens with it: the mouth box is taller when the mouth is open
    height = c.mouth_box[:, 3] - c.mouth_box[:, 1]
    assert np.corrcoef(height / (c.bbox[:, 3] - c.bbox[:, 2]), c.mouth_open)[0, 1] > 0.8


def test_blinks_in_a_ten_second_clip() -> None:
    c = synthesize_clip(2, 10.0, 32, voice="formant")
    closed = c.blink.astype(bool)
    onsets = np.flatnonzero(np.diff(closed.astype(int)) == 1)
    assert 2 <= len(onsets) <= 6  # every 2-6 s
    assert closed.sum() <= 4 * len(onsets) + 2  # ~0.2 s each
    assert (c.eye[closed] < 0.17).all() and (c.eye[~closed].max() > 0.25)
    openness = blink_openness(np.random.default_rng(0), 250)
    assert openness.min() == pytest.approx(0.0, abs=0.3) and openness.max() == 1.0


def test_formant_voice_has_pauses() -> None:
    audio = formant_speech(6.0, np.random.default_rng(1))
    env = loudness_envelope(audio, 150)
    assert (env < 0.01).mean() > 0.1 and (env > 0.05).mean() > 0.3


def test_layout_files_and_shapes(dataset: Path) -> None:
    manifest = read_manifest(dataset)
    assert (manifest.version, manifest.resolution, manifest.fps) == (1, RES, 25)
    assert manifest.audio_feature == "logmel80" and manifest.audio_dim == 80
    assert [c.id for c in manifest.clips] == ["000000", "000001"]
    assert {c.split for c in manifest.clips} == {"train", "test"}
    raw = json.loads((dataset / "manifest.json").read_text())
    assert set(raw["clips"][0]) >= {"id", "num_frames", "split"}
    reader = ClipReader(dataset / "clips" / "000000")
    f = reader.num_frames
    assert f == 50 == manifest.clips[0].num_frames
    shapes = {
        "frames": (f, RES, RES, 3),
        "audio_logmel80": (f, 80),
        "pose": (f, 6),
        "eye": (f, 2),
        "bbox": (f, 6),
        "mouth_box": (f, 4),
        "mouth_open": (f,),
        "blink": (f,),
    }
    for name, shape in shapes.items():
        assert reader.array(name).shape == shape, name
    assert reader.frames.dtype == np.uint8 and reader.array("pose").dtype == np.float32
    audio = reader.audio()
    assert audio.shape == (32000,) and np.abs(audio).max() > 0.5
    assert (dataset / "clips" / "000000" / "video.mp4").stat().st_size > 1000
    # written arrays equal a fresh synthesis of clip (seed, 0)
    fresh = synthesize_clip((3, 0), 2.0, RES, voice="formant")
    assert np.array_equal(reader.frames, fresh.frames)
    assert np.allclose(audio, fresh.audio, atol=1 / 32767)


def test_resume_skips_finished_clips(dataset: Path, tmp_path: Path) -> None:
    root = tmp_path / "set"
    shutil.copytree(dataset, root)
    first = root / "clips" / "000000" / "frames.npy"
    stamp = first.stat().st_mtime_ns
    (root / "clips" / ".partial-000002-x").mkdir()  # left by an interrupted run
    manifest = write_synth_dataset(
        root,
        num_clips=3,
        seconds=2.0,
        resolution=RES,
        seed=3,
        voice="formant",
        video=False,
        progress=False,
    )
    assert [c.id for c in manifest.clips] == ["000000", "000001", "000002"]
    assert first.stat().st_mtime_ns == stamp
    assert sorted(p.name for p in (root / "clips").iterdir()) == ["000000", "000001", "000002"]
    with pytest.raises(ValueError, match="other settings"):
        write_synth_dataset(
            root, num_clips=3, seconds=2.0, resolution=RES, seed=4, voice="formant", progress=False
        )


def test_held_out_split_is_stable() -> None:
    ids = [f"{i:06d}" for i in range(200)]
    small, large = held_out_split(ids[:20], 0, 0.1), held_out_split(ids, 0, 0.1)
    # seed 0 holds out clips 8 and 15 of the first 20 by their own draws (no clip forced), and adding
    # clips never moves a clip already there to the other split
    assert [i for i, t in enumerate(small) if t] == [8, 15]
    assert large[:20] == small and held_out_split(ids, 0, 0.1) == large and sum(large) == 21


def test_held_out_split_forces_one_test_clip_only_when_none_is_drawn() -> None:
    ids = [f"{i:06d}" for i in range(3)]
    # seed 3: no draw is below 0.1, so the smallest (clip 2) is forced; with fraction 0 none is
    assert held_out_split(ids, 3, 0.1) == [False, False, True]
    assert held_out_split(ids, 3, 0.0) == [False, False, False]
    assert held_out_split(ids[:1], 3, 0.1) == [False]  # a single clip is never held out
    # seed 3 draws 0.97, 0.96, 0.48: at 0.99 all would be test, so the largest draw (clip 0) trains
    assert held_out_split(ids, 3, 0.99) == [False, True, True]
    # names draw by their hash, stable across calls and order-independent
    names = ["bob-1", "amy-2", "zed"]
    assert held_out_split(names, 0, 0.5) == [False, True, True]
    assert held_out_split(names[::-1], 0, 0.5) == [True, True, False]


def test_cli_data_synth(tmp_path: Path) -> None:
    out = tmp_path / "cli"
    argv = [
        "data",
        "synth",
        str(out),
        "--num-clips",
        "1",
        "--seconds",
        "1",
        "--resolution",
        "64",
        "--seed",
        "5",
        "--workers",
        "1",
        "--no-progress",
        "--no-video",
        "--voice",
        "formant",
    ]
    assert cli.main(argv) == 0
    manifest = read_manifest(out)
    assert manifest.clips[0].num_frames == 25 and manifest.resolution == 64
    assert cli.main([*argv, "--seed", "6"]) == 2


def test_few_identities_and_a_larger_mouth(tmp_path: Path) -> None:
    argv = ["data", "synth", str(tmp_path), "--num-clips", "3", "--seconds", "0.4", "--resolution",
            str(RES), "--seed", "2", "--voice", "formant", "--no-video", "--no-progress"]  # fmt: skip
    assert cli.main([*argv, "--identities", "2", "--mouth-scale", "1.5"]) == 0
    assert cli.main([*argv, "--identities", "3", "--mouth-scale", "1.5"]) == 2  # other settings
    with pytest.raises(ValueError, match="identities"):
        write_synth_dataset(tmp_path, num_clips=1, seconds=0.4, resolution=RES, identities=0)
    infos = [ClipReader(tmp_path / "clips" / f"{i:06d}").info for i in range(3)]
    assert "style_seed" not in infos[0] and infos[2]["style_seed"] == [2, 0]
    assert info_style(infos[2]) == info_style(infos[0]) != info_style(infos[1])
    base = clip_style([2, 0])
    assert info_style(infos[2]).mouth_w == pytest.approx(1.5 * base.mouth_w)
    assert info_style(infos[2]).lips == base.lips
