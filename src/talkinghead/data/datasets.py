"""Torch datasets over the training layout (``dataset_layout``) for DAWN's three training stages.

* ``LFGPairDataset``: two frames of one clip (LFG training, spec §5.1: two random frames with
  replacement, sorted in time; on synthetic sets optionally mined by mouth opening,
  ``data.mouth_reference``).
* ``PBNetSequenceDataset``: audio features with the pose and eye windows they drive (PBNet,
  spec §5.2: a random window of 200 frames, shorter clips whole, zero-padded with a mask).
* ``A2VClipDataset``: a reference frame plus a clip with its features, pose, eye and mouth box
  (A2V-FDM, spec §5.3: stage 1 uses the clip's first frame as reference, stage 2 a random frame
  of the whole video).

Randomness: item ``i`` of epoch ``e`` draws its offsets from a ``torch.Generator`` seeded with
``(seed, e, i)``, so items are reproducible and independent of the DataLoader's worker count; call
``set_epoch`` to get new offsets each epoch. Pose and eye are raw (3DDFA units / ratios); the
trainers normalise or take deltas against the reference as their stage needs.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import Dataset

from talkinghead.data.layout import CLIPS_DIR, ClipEntry, ClipReader, read_manifest
from talkinghead.data.mouth_reference import half_open_frames, mined_driving

__all__ = ["A2VClipDataset", "LFGPairDataset", "PBNetSequenceDataset"]


def _to_chw(frames: np.ndarray) -> Tensor:
    """(..., H, W, 3) uint8 -> (..., 3, H, W) float32 in [0, 1]."""
    return torch.from_numpy(np.array(frames)).movedim(-1, -3).float() / 255.0


class _LayoutDataset(Dataset):
    """Clips of one split of a training set, with per-item seeded generators.

    Args:
        root: training-set folder (holds ``manifest.json``).
        split: "train", "test" or None (all clips).
        min_frames: clips shorter than this are left out.
        seed: base seed of the per-item generators.
        num_repeats: each clip appears this many times per epoch (short epochs waste less time
            in DataLoader start-up, as the official ``DatasetRepeater``).
    """

    def __init__(
        self,
        root: str | os.PathLike[str],
        split: str | None = "train",
        *,
        min_frames: int = 1,
        seed: int = 0,
        num_repeats: int = 1,
    ) -> None:
        if num_repeats < 1:
            raise ValueError(f"num_repeats={num_repeats} must be >= 1")
        self.root = Path(root)
        self.manifest = read_manifest(self.root)
        self.entries: list[ClipEntry] = [
            e for e in self.manifest.split(split) if e.num_frames >= min_frames
        ]
        if not self.entries:
            raise ValueError(
                f"{self.root} has no {split or 'any'} clips with at least {min_frames} frames"
            )
        self.seed = seed
        self.epoch = 0
        self.num_repeats = num_repeats
        self._readers: dict[str, ClipReader] = {}

    def __len__(self) -> int:
        return len(self.entries) * self.num_repeats

    def set_epoch(self, epoch: int) -> None:
        """Use the offsets of ``epoch`` from now on."""
        self.epoch = epoch

    def _generator(self, index: int) -> torch.Generator:
        state = np.random.SeedSequence([self.seed, self.epoch, index]).generate_state(2)
        return torch.Generator().manual_seed(int(state[0]) << 32 | int(state[1]))

    def _reader(self, index: int) -> ClipReader:
        if not 0 <= index < len(self):
            raise IndexError(f"index {index} out of range for {len(self)} items")
        entry = self.entries[index % len(self.entries)]
        if entry.id not in self._readers:
            self._readers[entry.id] = ClipReader(
                self.root / CLIPS_DIR / entry.id, self.manifest.audio_feature
            )
        return self._readers[entry.id]

    @staticmethod
    def _randint(high: int, generator: torch.Generator, size: int = 1) -> list[int]:
        return torch.randint(0, high, (size,), generator=generator).tolist()

    def _require_mouth_truth(self, what: str) -> None:
        """Refuse sets without the synthetic ``mouth_open`` / ``blink`` that ``what`` needs."""
        clip = self.root / CLIPS_DIR / self.entries[0].id
        if not all((clip / f"{name}.npy").is_file() for name in ("mouth_open", "blink")):
            raise ValueError(
                f"{what} needs the synthetic mouth_open and blink of each clip, which {clip} "
                "lacks; use a `talkinghead data synth` set or the default"
            )


class LFGPairDataset(_LayoutDataset):
    """Two frames of one clip, for the LFG (flow autoencoder) reconstruction objective.

    Args:
        root, split, seed, num_repeats: see ``_LayoutDataset``.
        max_gap: if given, the two frames are at most this many frames apart.
        pairs: "random" (official: two random frames, sorted in time) or "mouth" (synthetic sets
            only, ``data.mouth_reference``): the source has a half-open mouth and the driving frame
            is drawn by mouth-opening difference; ``max_gap`` is then ignored.

    Item:
        source: (3, H, W) float32 in [0, 1], the earlier frame;
        driving: (3, H, W) float32 in [0, 1], the later (or same) frame;
        mouth_box: (2, 4) float32 [x0, y0, x1, y1] pixels of source and driving;
        frame_indices: (2,) int64 their indices in the clip; clip: the clip id (str).
    """

    def __init__(
        self,
        root: str | os.PathLike[str],
        split: str | None = "train",
        *,
        max_gap: int | None = None,
        pairs: str = "random",
        seed: int = 0,
        num_repeats: int = 1,
    ) -> None:
        if max_gap is not None and max_gap < 0:
            raise ValueError(f"max_gap={max_gap} must be >= 0")
        if pairs not in ("random", "mouth"):
            raise ValueError(f"pairs={pairs!r} must be 'random' or 'mouth'")
        super().__init__(root, split, seed=seed, num_repeats=num_repeats)
        self.max_gap = max_gap
        self.pairs = pairs
        if pairs == "mouth":
            self._require_mouth_truth("pairs='mouth'")

    def __getitem__(self, index: int) -> dict[str, Any]:
        reader, gen = self._reader(index), self._generator(index)
        n = reader.num_frames
        if self.pairs == "mouth":
            mouth_open = np.asarray(reader.array("mouth_open"))
            sources = half_open_frames(mouth_open, np.asarray(reader.array("blink")))
            i = int(sources[self._randint(len(sources), gen)[0]])
            j = mined_driving(mouth_open, i, gen)
        elif self.max_gap is None:
            i, j = sorted(self._randint(n, gen, 2))
        else:
            i = self._randint(n, gen)[0]
            j = min(n - 1, i + self._randint(self.max_gap + 1, gen)[0])
        pair = _to_chw(reader.frames[[i, j]])
        return {
            "source": pair[0],
            "driving": pair[1],
            "mouth_box": torch.from_numpy(np.array(reader.array("mouth_box")[[i, j]], np.float32)),
            "frame_indices": torch.tensor([i, j]),
            "clip": reader.info["id"],
        }


class PBNetSequenceDataset(_LayoutDataset):
    """Windows of audio features with the pose and eye states to predict (PBNet).

    Args:
        root, split, seed, num_repeats: see ``_LayoutDataset``.
        num_frames: window length T; shorter clips are returned whole and zero-padded.

    Item:
        audio: (T, A) float32 per-frame audio features;
        pose: (T, 6) float32 [yaw, pitch, roll, s, tx, ty]; eye: (T, 2) float32;
        mask: (T,) bool, False on padding; start: int first frame; clip: str id.
    """

    def __init__(
        self,
        root: str | os.PathLike[str],
        split: str | None = "train",
        *,
        num_frames: int = 200,
        seed: int = 0,
        num_repeats: int = 1,
    ) -> None:
        if num_frames < 1:
            raise ValueError(f"num_frames={num_frames} must be >= 1")
        super().__init__(root, split, seed=seed, num_repeats=num_repeats)
        self.num_frames = num_frames

    def __getitem__(self, index: int) -> dict[str, Any]:
        reader, gen = self._reader(index), self._generator(index)
        n, t = reader.num_frames, self.num_frames
        start = self._randint(n - t + 1, gen)[0] if n > t else 0
        stop = min(n, start + t)

        def window(array: np.ndarray) -> Tensor:
            out = torch.zeros((t, *array.shape[1:]), dtype=torch.float32)
            out[: stop - start] = torch.from_numpy(np.array(array[start:stop], np.float32))
            return out

        mask = torch.zeros(t, dtype=torch.bool)
        mask[: stop - start] = True
        return {
            "audio": window(reader.audio_features),
            "pose": window(reader.array("pose")),
            "eye": window(reader.array("eye")),
            "mask": mask,
            "start": start,
            "clip": reader.info["id"],
        }


class A2VClipDataset(_LayoutDataset):
    """A reference frame and a clip with its conditions, for the A2V-FDM denoiser.

    Args:
        root, split, seed, num_repeats: see ``_LayoutDataset``.
        num_frames: clip length F (clips shorter than F are left out).
        reference: "first" = the clip's first frame (stage 1), "random" = a random frame of the
            whole video (stage 2), "open" = a random half-open-mouth frame of the whole video
            (synthetic sets only, ``data.mouth_reference``; the demo model's portraits).
        ground_truth: also return the synthetic ``mouth_open`` and ``blink`` of the clip.

    Item:
        source: (3, H, W) float32 in [0, 1], the reference frame;
        frames: (3, F, H, W) float32 in [0, 1];
        audio: (F, A) float32; pose: (F, 6) float32; eye: (F, 2) float32;
        source_pose: (6,) and source_eye: (2,) of the reference frame;
        bbox: (6,) face box of the reference frame [x_min, x_max, y_min, y_max, H, W];
        mouth_box: (F, 4) [x0, y0, x1, y1] pixels;
        start: int first frame; source_index: int reference frame; clip: str id;
        with ``ground_truth``: mouth_open (F,) float32 and blink (F,) float32.
    """

    def __init__(
        self,
        root: str | os.PathLike[str],
        split: str | None = "train",
        *,
        num_frames: int = 20,
        reference: str = "first",
        ground_truth: bool = False,
        seed: int = 0,
        num_repeats: int = 1,
    ) -> None:
        if num_frames < 1:
            raise ValueError(f"num_frames={num_frames} must be >= 1")
        if reference not in ("first", "random", "open"):
            raise ValueError(f"reference={reference!r} must be 'first', 'random' or 'open'")
        super().__init__(root, split, min_frames=num_frames, seed=seed, num_repeats=num_repeats)
        self.num_frames = num_frames
        self.reference = reference
        self.ground_truth = ground_truth
        if reference == "open":
            self._require_mouth_truth("reference='open'")

    def __getitem__(self, index: int) -> dict[str, Any]:
        reader, gen = self._reader(index), self._generator(index)
        n, f = reader.num_frames, self.num_frames
        start = self._randint(n - f + 1, gen)[0]
        if self.reference == "open":
            refs = half_open_frames(reader.array("mouth_open"), reader.array("blink"))
            ref = int(refs[self._randint(len(refs), gen)[0]])
        else:
            ref = start if self.reference == "first" else self._randint(n, gen)[0]
        span = slice(start, start + f)

        def rows(name: str, sl: slice | int = span) -> Tensor:
            return torch.from_numpy(np.array(reader.array(name)[sl], np.float32))

        item: dict[str, Any] = {
            "source": _to_chw(reader.frames[ref]),
            "frames": _to_chw(reader.frames[span]).movedim(0, 1),  # (F, 3, H, W) -> (3, F, H, W)
            "audio": torch.from_numpy(np.array(reader.audio_features[span], np.float32)),
            "pose": rows("pose"),
            "eye": rows("eye"),
            "source_pose": rows("pose", ref),
            "source_eye": rows("eye", ref),
            "bbox": rows("bbox", ref),
            "mouth_box": rows("mouth_box"),
            "start": start,
            "source_index": ref,
            "clip": reader.info["id"],
        }
        if self.ground_truth:
            item["mouth_open"] = rows("mouth_open")
            item["blink"] = rows("blink")
        return item
