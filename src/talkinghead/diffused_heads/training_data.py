"""Diffused Heads training items from the prepared-data layout (diffusedheads_spec.md §4.1).

One item per (clip, repeat): a target frame and an identity frame, two distinct random frames of the
clip (the official ``identity_frame: random``); the ``n_motion_frames`` frames just before the target,
oldest first, the missing ones (target < n) filled with the identity frame placed first; the audio of
the clip from its start to the last frame of the target's audio window, as waveform windows of the
SDA encoder (the encoder trains with the UNet, so items carry audio, not precomputed embeddings; its
GRU starts at the clip's first frame as in generation); the indices of the 2k+1 audio embeddings
around the target, clamped to the clip; the mouth boxes of the target and the identity frame.

Lip landmarks: L_lip reads only the extent of the 20 mouth landmarks (68-point indices 48-67), which is
what the layout's ``mouth_box`` stores (``data/prepare.py`` takes min/max of those landmarks when the
3DDFA_V2 landmark head is available, the synthetic generator draws the mouth and records its box), so
the box corners stand in for the points: ``lip_loss`` gives the same crop for both.
"""

from __future__ import annotations

import os
from typing import Any

import numpy as np
import torch
from torch import Tensor
from torch.nn.utils.rnn import pad_sequence
from torch.utils.data import default_collate

from talkinghead.data.datasets import _LayoutDataset
from talkinghead.diffused_heads.audio_encoder import frame_windows
from talkinghead.diffused_heads.sampling import audio_window


def to_model_range(frames: np.ndarray) -> Tensor:
    """(..., H, W, 3) uint8 -> (..., 3, H, W) float32 in [-1, 1] (the official ``x/255*2-1``)."""
    return torch.from_numpy(np.array(frames)).movedim(-1, -3).float() / 255 * 2 - 1


def box_corners(box: np.ndarray) -> Tensor:
    """(4,) [x0, y0, x1, y1] -> (2, 2) [[x0, y0], [x1, y1]]: points with the box's extent."""
    return torch.from_numpy(np.array(box, np.float32)).reshape(2, 2)


class DiffusedHeadsFrameDataset(_LayoutDataset):
    """Target frame, identity frame, motion frames, audio windows and mouth boxes (see module doc).

    Args:
        root, split, seed, num_repeats: see ``data.datasets._LayoutDataset``.
        n_motion_frames: previous frames fed to the UNet.
        n_audio_motion_embs: k, audio embeddings on each side of the target.
        window, stride, sample_rate: the audio encoder's window and hop in samples at its rate
            (3200 / 640 at 16 kHz: the hop is one 25 fps frame).

    Item:
        target, identity: (3, S, S) float32 in [-1, 1];
        motion: (n·3, S, S) float32 in [-1, 1], oldest first;
        audio_windows: (L, window) float32, the clip's windows 0..L−1, L = last index needed + 1;
        audio_index: (2k+1,) int64 rows of the encoder output around the target;
        mouth, identity_mouth: (2, 2) mouth-box corners [[x0, y0], [x1, y1]] in pixels;
        frame_indices: (2,) int64 [target, identity]; clip: the clip id.
    """

    def __init__(
        self,
        root: str | os.PathLike[str],
        split: str | None = "train",
        *,
        n_motion_frames: int,
        n_audio_motion_embs: int,
        window: int,
        stride: int,
        sample_rate: int,
        seed: int = 0,
        num_repeats: int = 1,
    ) -> None:
        super().__init__(root, split, min_frames=2, seed=seed, num_repeats=num_repeats)
        facts = self.manifest
        if facts.sample_rate != sample_rate or facts.fps * stride != sample_rate:
            raise ValueError(
                f"{root} holds {facts.fps} fps / {facts.sample_rate} Hz clips; this audio encoder "
                f"needs {sample_rate // stride} fps video with {sample_rate} Hz audio."
            )
        self.n_motion, self.half = n_motion_frames, n_audio_motion_embs
        self.window, self.stride = window, stride

    def __getitem__(self, index: int) -> dict[str, Any]:
        reader, gen = self._reader(index), self._generator(index)
        n = reader.num_frames
        target = self._randint(n, gen)[0]
        identity = self._randint(n - 1, gen)[0]
        identity += identity >= target  # two distinct frames
        before = range(target - self.n_motion, target)
        motion = [identity if i < 0 else i for i in before]
        frames = to_model_range(reader.frames[[target, identity, *motion]])
        rows = audio_window(target, n, self.half)
        wave = torch.from_numpy(reader.audio())
        windows = frame_windows(wave, self.window, self.stride)[: max(rows) + 1].clone()
        boxes = reader.array("mouth_box")
        return {
            "target": frames[0],
            "identity": frames[1],
            "motion": frames[2:].reshape(-1, *frames.shape[2:]),  # -> (n·3, S, S)
            "audio_windows": windows,
            "audio_index": torch.tensor(rows),
            "mouth": box_corners(boxes[target]),
            "identity_mouth": box_corners(boxes[identity]),
            "frame_indices": torch.tensor([target, identity]),
            "clip": reader.info["id"],
        }


def collate_frames(items: list[dict[str, Any]]) -> dict[str, Any]:
    """Batch items; ``audio_windows`` are right-padded to the longest (B, L, window) and their
    valid counts go to ``audio_lengths`` (B,)."""
    windows = [item.pop("audio_windows") for item in items]
    batch = default_collate(items)
    batch["audio_windows"] = pad_sequence(windows, batch_first=True)
    batch["audio_lengths"] = torch.tensor([len(w) for w in windows])
    return batch
