"""68-point landmarks for every frame of a prepared training set (what DiffTalk training reads).

``talkinghead data synth`` and ``prepare`` write frames, audio, pose and boxes but no 68 points
(DAWN does not need them). ``add_landmarks`` runs the project's face backend (FaceBoxes + the
3DDFA_V2 regressor's 68-point head) over each clip's frames and writes ``landmarks.npy``
(F, 68, 2) float32 in frame pixels beside them. The face box is the per-frame detection smoothed
over time (``geometry.smooth_boxes``); frames where nothing is detected take the nearest frame's
box. A clip in which no frame has a face is reported and left without landmarks.
"""

from __future__ import annotations

import logging
import os
import tempfile
from collections.abc import Callable
from pathlib import Path

import numpy as np

from talkinghead.data.layout import CLIPS_DIR, ClipReader, read_manifest
from talkinghead.difftalk.geometry import smooth_boxes
from talkinghead.difftalk.prepare import FaceBackend
from talkinghead.difftalk.training import LANDMARKS
from talkinghead.face.analysis import largest_face

logger = logging.getLogger(__name__)


def clip_landmarks(
    frames: np.ndarray, backend: FaceBackend, box_smoothing: int = 9
) -> np.ndarray | None:
    """(F, H, W, 3) uint8 -> (F, 68, 2) float32 frame-pixel landmarks, or None without any face."""
    raw = np.full((frames.shape[0], 4), np.nan)
    for i, frame in enumerate(frames):
        found = backend.detect(np.ascontiguousarray(frame))
        if len(found):
            raw[i] = largest_face(found)[:4]
    valid = np.flatnonzero(~np.isnan(raw).any(axis=1))
    if valid.size == 0:
        return None
    boxes = smooth_boxes(raw, box_smoothing)
    nearest = valid[np.abs(np.arange(len(raw))[:, None] - valid[None]).argmin(axis=1)]
    boxes = boxes[nearest]
    points = [
        backend.landmarks(np.ascontiguousarray(f), b) for f, b in zip(frames, boxes, strict=True)
    ]
    return np.stack(points).astype(np.float32)


def add_landmarks(
    root: str | Path,
    backend: FaceBackend,
    *,
    overwrite: bool = False,
    callback: Callable[[str, int, int], None] | None = None,
) -> list[str]:
    """Write ``landmarks.npy`` into every clip of the set at ``root``; returns the clips without a face.

    Clips that already have the file are skipped unless ``overwrite``; each file is written to a
    temp name and renamed, so an interrupted run leaves no partial file.
    """
    clips = read_manifest(root).clips
    faceless = []
    for k, entry in enumerate(clips):
        clip = ClipReader(Path(root) / CLIPS_DIR / entry.id)
        target = clip.dir / f"{LANDMARKS}.npy"
        if target.is_file() and not overwrite:
            continue
        points = clip_landmarks(np.asarray(clip.frames), backend)
        if points is None:
            logger.warning("no face in any frame of clip %s: it gets no landmarks", entry.id)
            faceless.append(entry.id)
            continue
        fd, tmp = tempfile.mkstemp(dir=clip.dir, prefix=f".{LANDMARKS}.", suffix=".npy")
        with os.fdopen(fd, "wb") as f:
            np.save(f, points)
        os.replace(tmp, target)
        if callback is not None:
            callback("landmarks", k + 1, len(clips))
    return faceless
