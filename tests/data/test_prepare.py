"""`talkinghead prepare`: real videos (any fps / size) -> the training layout at 25 fps."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import cv2
import numpy as np
import pytest
from scipy.io import wavfile

from talkinghead.data.layout import ClipReader, read_manifest
from talkinghead.data.prepare import find_videos, nearest_frame_indices, prepare_dataset
from talkinghead.media.video import VideoWriter

SRC_FPS = 30
SECONDS = 2.0


def _make_video(path: Path, portrait: np.ndarray, wav: Path, shift: int) -> None:
    """The portrait drifting by a few pixels, 2 s at 30 fps, with the speech track."""
    with VideoWriter(path, fps=SRC_FPS, audio_path=wav, preset="ultrafast") as writer:
        for i in range(int(SECONDS * SRC_FPS)):
            dx = shift * np.sin(i / 6.0)
            m = np.float32([[1, 0, dx], [0, 1, dx / 2]])
            writer.write(
                cv2.warpAffine(portrait, m, portrait.shape[1::-1], borderMode=cv2.BORDER_REPLICATE)
            )


@pytest.fixture(scope="module")
def videos(media_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("videos")
    bgr = cv2.imread(str(media_dir / "portraits" / "real_male1.jpeg"))
    portrait = cv2.cvtColor(
        cv2.resize(bgr, (240, 200), interpolation=cv2.INTER_AREA), cv2.COLOR_BGR2RGB
    )
    sr, pcm = wavfile.read(media_dir / "audio" / "WRA_MarcoRubio_000.wav")
    wav = folder / "speech.wav"
    wavfile.write(wav, sr, pcm[: int(SECONDS * sr)])
    _make_video(folder / "alice.mp4", portrait, wav, 3)
    sub = folder / "more"
    sub.mkdir()
    _make_video(sub / "bob.mov", portrait[:, ::-1].copy(), wav, 5)
    (folder / "broken.mp4").write_bytes(b"\x00\x00\x00\x18ftypmp42 this is not a video" * 10)
    return folder


def _prepare(videos: Path, out: Path, media_dir: Path, resolution: int = 64):
    """The module's prepare run: 3DDFA face assets, no viewable videos, half the clips held out."""
    return prepare_dataset(
        [videos],
        out,
        resolution=resolution,
        face3d_dir=media_dir / "face3d",
        video=False,
        progress=False,
        test_fraction=0.5,
    )


@pytest.fixture(scope="module")
def prepared(videos: Path, media_dir: Path, tmp_path_factory: pytest.TempPathFactory):
    out = tmp_path_factory.mktemp("prepared")
    return out, _prepare(videos, out, media_dir)


def test_nearest_frame_indices() -> None:
    assert nearest_frame_indices(60, 30).tolist()[:6] == [0, 1, 2, 4, 5, 6]
    assert len(nearest_frame_indices(60, 30)) == 50
    assert nearest_frame_indices(10, 10).tolist() == [
        0,
        0,
        1,
        1,
        2,
        2,
        2,
        3,
        3,
        4,
        4,
        4,
        5,
        5,
        6,
        6,
        6,
        7,
        7,
        8,
        8,
        8,
        9,
        9,
        9,
    ]
    with pytest.raises(ValueError, match="positive rate"):
        nearest_frame_indices(10, 0)


def test_find_videos(videos: Path) -> None:
    names = [p.name for p in find_videos([videos])]
    assert names == ["alice.mp4", "broken.mp4", "bob.mov"]
    with pytest.raises(ValueError, match="does not exist"):
        find_videos([videos / "nope"])


def test_clips_at_25_fps(prepared) -> None:
    out, _ = prepared
    manifest = read_manifest(out)
    assert sorted(c.id for c in manifest.clips) == ["alice", "bob"]
    assert manifest.resolution == 64 and manifest.audio_feature == "logmel80"
    assert manifest.audio_dim == 80 and manifest.fps == 25
    assert sorted(c.split for c in manifest.clips) == ["test", "train"]
    for entry in manifest.clips:
        reader = ClipReader(out / "clips" / entry.id)
        f = entry.num_frames
        assert f == int(SECONDS * 25)
        assert reader.frames.shape == (f, 64, 64, 3)
        assert reader.audio_features.shape == (f, 80)
        assert reader.array("pose").shape == (f, 6)
        assert reader.array("eye").shape == (f, 2)
        assert reader.audio().shape[0] >= f * 640
        bbox = reader.array("bbox")
        assert np.all(bbox[:, 4:] == 64) and np.all(bbox[:, 0] < bbox[:, 1])
        mouth = reader.array("mouth_box")
        # the mouth lies in the lower half of the face box, inside the crop
        assert np.all((mouth >= 0) & (mouth < 64))
        assert np.all(mouth[:, 1] > (bbox[:, 2] + bbox[:, 3]) / 2 - 2)
        # a real 3DDFA pose (not the neutral fallback) that follows the drifting face
        pose = reader.array("pose")
        assert np.all(np.abs(pose[:, :3]) < 45) and pose[:, 4].std() > 0
        assert not (reader.dir / "mouth_open.npy").exists()
        assert reader.info["source_fps"] == SRC_FPS


def test_bad_video_reported_and_skipped(prepared) -> None:
    out, result = prepared
    assert [Path(s["path"]).name for s in result.skipped] == ["broken.mp4"]
    saved = json.loads((out / "skipped.json").read_text())
    assert saved == result.skipped and saved[0]["reason"]
    assert sorted(result.written) == ["alice", "bob"]


def test_resume_skips_finished(prepared, videos: Path, media_dir: Path) -> None:
    out, _ = prepared
    stamp = (out / "clips" / "alice" / "frames.npy").stat().st_mtime_ns
    shutil.rmtree(out / "clips" / "bob")
    (out / "clips" / ".partial-bob-x").mkdir()  # left by an interrupted run
    result = _prepare(videos, out, media_dir)
    assert result.written == ["bob"]
    assert (out / "clips" / "alice" / "frames.npy").stat().st_mtime_ns == stamp
    assert not (out / "clips" / ".partial-bob-x").exists()
    assert sorted(c.id for c in read_manifest(out).clips) == ["alice", "bob"]
    with pytest.raises(ValueError, match="other settings"):
        _prepare(videos, out, media_dir, resolution=32)


def test_no_audio_is_skipped(tmp_path: Path, videos: Path) -> None:
    silent = tmp_path / "in" / "mute.mp4"
    silent.parent.mkdir()
    with VideoWriter(silent, fps=25, preset="ultrafast") as writer:
        for _ in range(10):
            writer.write(np.full((64, 64, 3), 128, np.uint8))
    result = prepare_dataset(
        [silent.parent], tmp_path / "out", resolution=32, video=False, progress=False
    )
    assert result.manifest.clips == []
    assert "no audio" in result.skipped[0]["reason"]


def test_cli_prepare(tmp_path: Path, videos: Path) -> None:
    from talkinghead.cli import main

    out = tmp_path / "set"
    code = main(
        [
            "prepare",
            str(videos / "broken.mp4"),
            "-o",
            str(out),
            "--resolution",
            "64",
            "--no-video",
            "--no-progress",
        ]
    )
    assert code == 0
    assert read_manifest(out).clips == []
    assert "broken.mp4" in (out / "skipped.json").read_text()
    assert main(["prepare", str(videos / "missing.mp4"), "-o", str(out)]) == 2
