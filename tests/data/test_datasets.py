"""Datasets over the training layout: documented item shapes, seeded offsets, padding, filters."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from talkinghead.data.datasets import A2VClipDataset, LFGPairDataset, PBNetSequenceDataset
from talkinghead.data.layout import (
    ClipData,
    ClipEntry,
    Manifest,
    write_clip,
    write_manifest,
)

S, A = 32, 8  # frame side, audio feature width
LENGTHS = {"a": 30, "b": 50, "c": 12}  # frames per clip


def _clip(num_frames: int, rng: np.random.Generator) -> ClipData:
    # frame i is filled with value i so that tests can read back which frames were taken
    frames = np.broadcast_to(
        np.arange(num_frames, dtype=np.uint8)[:, None, None, None], (num_frames, S, S, 3)
    ).copy()
    per_frame = np.arange(num_frames, dtype=np.float32)[:, None]
    return ClipData(
        frames=frames,
        audio=rng.uniform(-0.5, 0.5, num_frames * 640).astype(np.float32),
        audio_features=np.repeat(per_frame, A, 1),
        pose=np.repeat(per_frame, 6, 1),
        eye=np.repeat(per_frame, 2, 1),
        bbox=np.tile(np.array([8, 24, 6, 26, S, S], np.float32), (num_frames, 1)),
        mouth_box=np.tile(np.array([12, 18, 20, 22], np.float32), (num_frames, 1)),
        extras={
            "mouth_open": per_frame[:, 0] / num_frames,
            "blink": np.zeros(num_frames, np.uint8),
        },
    )


@pytest.fixture(scope="module")
def root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("layout")
    rng = np.random.default_rng(0)
    for clip_id, n in LENGTHS.items():
        write_clip(root / "clips", clip_id, _clip(n, rng), audio_feature="logmel8", video=False)
    entries = [ClipEntry(c, n, "test" if c == "b" else "train") for c, n in LENGTHS.items()]
    write_manifest(
        root, Manifest(resolution=S, audio_feature="logmel8", audio_dim=A, clips=entries)
    )
    return root


def test_lfg_pairs(root: Path) -> None:
    ds = LFGPairDataset(root, "train", seed=1, num_repeats=3)
    assert len(ds) == 6
    item = ds[0]
    assert item["source"].shape == item["driving"].shape == (3, S, S)
    assert item["source"].dtype == torch.float32 and 0 <= item["source"].min() <= 1
    i, j = item["frame_indices"].tolist()
    assert i <= j < LENGTHS[item["clip"]]
    assert torch.allclose(item["source"], torch.full((3, S, S), i / 255))
    assert torch.allclose(item["driving"], torch.full((3, S, S), j / 255))
    gaps = [
        int(torch.diff(LFGPairDataset(root, max_gap=2, seed=s)[1]["frame_indices"]))
        for s in range(20)
    ]
    assert max(gaps) <= 2


def test_items_are_seeded_and_change_with_epoch(root: Path) -> None:
    ds = LFGPairDataset(root, None, seed=5)
    first = [ds[k]["frame_indices"].tolist() for k in range(len(ds))]
    assert first == [
        LFGPairDataset(root, None, seed=5)[k]["frame_indices"].tolist() for k in range(3)
    ]
    ds.set_epoch(1)
    assert [ds[k]["frame_indices"].tolist() for k in range(len(ds))] != first


def test_pbnet_windows_and_padding(root: Path) -> None:
    ds = PBNetSequenceDataset(root, None, num_frames=20, seed=0)
    by_clip = {ds.entries[k].id: ds[k] for k in range(len(ds))}
    long = by_clip["b"]
    assert long["audio"].shape == (20, A) and long["pose"].shape == (20, 6)
    assert long["eye"].shape == (20, 2) and long["mask"].all()
    assert long["pose"][:, 0].tolist() == list(range(long["start"], long["start"] + 20))
    short = by_clip["c"]
    assert short["start"] == 0 and short["mask"].sum() == 12
    assert (short["pose"][12:] == 0).all() and short["audio"][11, 0] == 11
    batch = next(iter(DataLoader(ds, batch_size=3)))
    assert batch["audio"].shape == (3, 20, A) and batch["mask"].shape == (3, 20)


def test_a2v_clip_items(root: Path) -> None:
    ds = A2VClipDataset(root, None, num_frames=16, ground_truth=True, seed=2)
    assert sorted(e.id for e in ds.entries) == ["a", "b"]  # "c" is shorter than 16 frames
    item = ds[0]
    f = 16
    assert item["source"].shape == (3, S, S) and item["frames"].shape == (3, f, S, S)
    assert item["audio"].shape == (f, A) and item["pose"].shape == (f, 6)
    assert item["eye"].shape == (f, 2) and item["mouth_box"].shape == (f, 4)
    assert item["source_pose"].shape == (6,) and item["source_eye"].shape == (2,)
    assert item["bbox"].shape == (6,) and item["bbox"][4] == S
    assert item["mouth_open"].shape == (f,) and item["blink"].shape == (f,)
    start = item["start"]
    assert item["source_index"] == start
    assert torch.allclose(item["frames"][:, 3], torch.full((3, S, S), (start + 3) / 255))
    assert torch.equal(item["source"], item["frames"][:, 0])
    refs = {
        A2VClipDataset(root, "test", num_frames=16, reference="random", seed=s)[0]["source_index"]
        for s in range(12)
    }
    assert len(refs) > 3
    batch = next(iter(DataLoader(ds, batch_size=2)))
    assert batch["frames"].shape == (2, 3, f, S, S)


def test_bad_arguments(root: Path) -> None:
    with pytest.raises(ValueError, match="no test clips"):
        A2VClipDataset(root, "test", num_frames=60)
    with pytest.raises(ValueError, match="split"):
        LFGPairDataset(root, "val")
    with pytest.raises(ValueError, match="reference"):
        A2VClipDataset(root, reference="last")
    with pytest.raises(ValueError, match="manifest"):
        LFGPairDataset(root / "clips")
    with pytest.raises(IndexError):
        LFGPairDataset(root)[99]
    with pytest.raises(ValueError, match="pose"):
        bad = _clip(5, np.random.default_rng(0))
        bad.pose = bad.pose[:, :3]
        write_clip(root / "clips", "bad", bad, video=False)


def test_lfg_mouth_pairs_use_half_open_sources(root: Path) -> None:
    # mouth_open of frame i is i / n: half-open (0.35..0.8) sources only
    ds = LFGPairDataset(root, "train", pairs="mouth", seed=3, num_repeats=20)
    for k in range(len(ds)):
        item = ds[k]
        n = LENGTHS[item["clip"]]
        i, j = item["frame_indices"].tolist()
        assert 0.35 <= i / n <= 0.8 and 0 <= j < n
        assert int(item["source"][0, 0, 0] * 255 + 0.5) == i
    with pytest.raises(ValueError, match="pairs"):
        LFGPairDataset(root, "train", pairs="nearest")


def test_mouth_aids_refuse_sets_without_truth(root: Path, tmp_path: Path) -> None:
    clip = _clip(20, np.random.default_rng(1))
    clip.extras = {}  # a prepared (real) set: no synthetic mouth_open / blink
    write_clip(tmp_path / "clips", "real", clip, audio_feature="logmel8", video=False)
    write_manifest(tmp_path, Manifest(S, "logmel8", A, [ClipEntry("real", 20, "train")]))
    with pytest.raises(ValueError, match="mouth_open"):
        LFGPairDataset(tmp_path, pairs="mouth")
    with pytest.raises(ValueError, match="mouth_open"):
        A2VClipDataset(tmp_path, num_frames=8, reference="open")


def test_a2v_open_reference(root: Path) -> None:
    ds = A2VClipDataset(root, None, num_frames=16, reference="open", seed=4, num_repeats=5)
    for k in range(len(ds)):
        item = ds[k]
        n = LENGTHS[item["clip"]]
        assert 0.35 <= item["source_index"] / n <= 0.8
