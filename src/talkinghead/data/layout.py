"""On-disk layout of a training set: one directory per clip plus a manifest.

Written by ``talkinghead data synth`` (``synth.py``) and, later, ``talkinghead prepare`` (real
videos); read by the Dataset classes in ``datasets.py``. It holds what DAWN's training stages
consume (spec §5: LFG frame pairs, PBNet audio/pose/eye windows, A2V-FDM clips with a mouth box),
stored per clip instead of the official per-modality folders of 25-frame chunks::

    ROOT/manifest.json          {version, resolution, fps, sample_rate, audio_feature, audio_dim,
                                 generator, clips: [{id, num_frames, split, ...}]}
    ROOT/clips/<id>/clip.json   per-clip facts (num_frames, resolution, fps, source, ...)
    ROOT/clips/<id>/video.mp4   H.264 + AAC, for eyes (optional)
    ROOT/clips/<id>/frames.npy  (F, H, W, 3) uint8 RGB, memory-mapped for random access
    ROOT/clips/<id>/audio.wav   16 kHz mono 16-bit PCM
    ROOT/clips/<id>/audio_<feature>.npy  (F, A) float32 audio features per video frame
    ROOT/clips/<id>/pose.npy    (F, 6) float32 [yaw, pitch, roll (deg), scale, tx, ty] (3DDFA)
    ROOT/clips/<id>/eye.npy     (F, 2) float32 eye-openness ratios [left, right] (~0.3 open)
    ROOT/clips/<id>/bbox.npy    (F, 6) float32 face box [x_min, x_max, y_min, y_max, H, W]
    ROOT/clips/<id>/mouth_box.npy  (F, 4) float32 mouth box [x0, y0, x1, y1] in pixels
    ROOT/clips/<id>/<extra>.npy    optional per-frame extras (synthetic ground truth:
                                   mouth_open (F,), blink (F,))

A clip is written into a hidden temp directory and renamed into place, so a directory named
``<id>`` is always complete and an interrupted run can resume by skipping existing clips.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from scipy.io import wavfile

from talkinghead.files import PARTIAL_SUFFIX, atomic_directory, atomic_write_text

__all__ = [
    "CLIPS_DIR",
    "FPS",
    "LAYOUT_VERSION",
    "MANIFEST_NAME",
    "SAMPLE_RATE",
    "ClipData",
    "ClipEntry",
    "ClipReader",
    "Manifest",
    "clip_done",
    "read_manifest",
    "remove_partial_clips",
    "write_clip",
    "write_manifest",
]

logger = logging.getLogger(__name__)

LAYOUT_VERSION = 1
FPS = 25  # video frames per second of every clip
SAMPLE_RATE = 16000  # Hz of audio.wav
CLIPS_DIR = "clips"
MANIFEST_NAME = "manifest.json"
_OLD_PARTIAL_PREFIX = ".partial-"  # temp clip folders of runs before files.atomic_directory
_PER_FRAME = {"pose": 6, "eye": 2, "bbox": 6, "mouth_box": 4}  # name -> width


@dataclass
class ClipData:
    """Everything stored for one clip (F video frames at ``FPS``).

    Attributes:
        frames: (F, H, W, 3) uint8 RGB, face-centred square crops.
        audio: (N,) float32 mono at 16 kHz, N >= F * 640.
        audio_features: (F, A) float32 per-frame audio features.
        pose: (F, 6) [yaw, pitch, roll (deg), scale, tx, ty].
        eye: (F, 2) eye-openness ratios [left, right].
        bbox: (F, 6) [x_min, x_max, y_min, y_max, H, W] of the face.
        mouth_box: (F, 4) [x0, y0, x1, y1] of the mouth in pixels.
        extras: further per-frame arrays with F rows, saved as ``<name>.npy``.
        info: JSON-able facts saved in ``clip.json``.
    """

    frames: np.ndarray
    audio: np.ndarray
    audio_features: np.ndarray
    pose: np.ndarray
    eye: np.ndarray
    bbox: np.ndarray
    mouth_box: np.ndarray
    extras: dict[str, np.ndarray] = field(default_factory=dict)
    info: dict[str, Any] = field(default_factory=dict)

    @property
    def num_frames(self) -> int:
        return int(self.frames.shape[0])

    def validate(self) -> None:
        """Raise ``ValueError`` unless every array has the documented shape and F rows."""
        f = self.num_frames
        if self.frames.dtype != np.uint8 or self.frames.ndim != 4 or self.frames.shape[3] != 3:
            raise ValueError(
                f"frames must be (F, H, W, 3) uint8, got {self.frames.shape} {self.frames.dtype}"
            )
        if self.audio.ndim != 1 or self.audio.shape[0] < f * SAMPLE_RATE // FPS:
            raise ValueError(f"audio {self.audio.shape} must be mono and cover {f} frames")
        if self.audio_features.ndim != 2 or self.audio_features.shape[0] != f:
            raise ValueError(f"audio_features {self.audio_features.shape} must be ({f}, A)")
        for name, width in _PER_FRAME.items():
            shape = getattr(self, name).shape
            if shape != (f, width):
                raise ValueError(f"{name} has shape {shape}; expected ({f}, {width})")
        for name, array in self.extras.items():
            if array.shape[:1] != (f,):
                raise ValueError(f"extra {name!r} has shape {array.shape}; expected F={f} rows")


def clip_done(clips_dir: str | os.PathLike[str], clip_id: str) -> bool:
    """True when ``clips_dir/clip_id`` was completely written (it exists only then)."""
    return (Path(clips_dir) / clip_id / "clip.json").is_file()


def remove_partial_clips(clips_dir: str | os.PathLike[str]) -> int:
    """Delete temp directories left by interrupted writers; returns how many were removed."""
    clips_dir = Path(clips_dir)
    if not clips_dir.is_dir():
        return 0
    stale = [
        p
        for p in clips_dir.iterdir()
        if p.name.startswith(_OLD_PARTIAL_PREFIX)
        or (p.name.startswith(".") and p.name.endswith(PARTIAL_SUFFIX))
    ]
    for path in stale:
        shutil.rmtree(path, ignore_errors=True)
    return len(stale)


def _save_wav(path: Path, audio: np.ndarray) -> None:
    pcm = np.round(np.clip(audio, -1.0, 1.0) * 32767.0).astype(np.int16)
    wavfile.write(path, SAMPLE_RATE, pcm)


def write_clip(
    clips_dir: str | os.PathLike[str],
    clip_id: str,
    clip: ClipData,
    *,
    audio_feature: str = "logmel80",
    video: bool = True,
) -> Path:
    """Write one clip atomically (temp directory renamed to ``clips_dir/clip_id``).

    Args:
        clips_dir: the ``ROOT/clips`` directory (created if missing).
        clip_id: directory name; letters, digits, ``-``, ``_`` and ``.`` only.
        clip: the arrays; validated first.
        audio_feature: feature name; the features go to ``audio_<feature>.npy``.
        video: also write ``video.mp4`` (H.264 + AAC) for viewing.

    Returns:
        the clip directory.
    """
    if not clip_id or not all(c.isalnum() or c in "-_." for c in clip_id) or clip_id[0] == ".":
        raise ValueError(f"clip_id={clip_id!r} must be a plain name (letters, digits, - _ .)")
    clip.validate()
    clips_dir = Path(clips_dir)
    clips_dir.mkdir(parents=True, exist_ok=True)
    final = clips_dir / clip_id
    if final.exists():
        raise FileExistsError(f"clip directory already exists: {final}")
    with atomic_directory(final, replace=False) as tmp:
        np.save(tmp / "frames.npy", np.ascontiguousarray(clip.frames))
        _save_wav(tmp / "audio.wav", clip.audio)
        np.save(tmp / f"audio_{audio_feature}.npy", clip.audio_features.astype(np.float32))
        for name in _PER_FRAME:
            np.save(tmp / f"{name}.npy", getattr(clip, name).astype(np.float32))
        for name, array in clip.extras.items():
            np.save(tmp / f"{name}.npy", array)
        if video:
            from talkinghead.media.video import VideoWriter

            with VideoWriter(tmp / "video.mp4", fps=FPS, audio_path=tmp / "audio.wav") as writer:
                for frame in clip.frames:
                    writer.write(frame)
        info = {
            "id": clip_id,
            "num_frames": clip.num_frames,
            "height": int(clip.frames.shape[1]),
            "width": int(clip.frames.shape[2]),
            "fps": FPS,
            "sample_rate": SAMPLE_RATE,
            "audio_feature": audio_feature,
            "extras": sorted(clip.extras),
            **clip.info,
        }
        # clip.json last: its presence marks a complete clip even on filesystems without rename
        (tmp / "clip.json").write_text(json.dumps(info, indent=1))
    return final


@dataclass
class ClipEntry:
    """One clip in the manifest."""

    id: str  # directory name under clips/
    num_frames: int  # F
    split: str  # "train" or "test"
    info: dict[str, Any] = field(default_factory=dict)  # extra facts (e.g. the synthetic voice)


@dataclass
class Manifest:
    """``ROOT/manifest.json``: what the clips are and how they were made."""

    resolution: int  # H = W of frames.npy
    audio_feature: str  # name of the per-frame feature file: audio_<name>.npy
    audio_dim: int  # A, its width
    clips: list[ClipEntry]
    fps: int = FPS
    sample_rate: int = SAMPLE_RATE
    version: int = LAYOUT_VERSION
    generator: dict[str, Any] = field(default_factory=dict)  # how the set was made (for resuming)

    def split(self, name: str | None) -> list[ClipEntry]:
        """Clips of split ``name`` ("train" / "test"), or all clips for ``None``."""
        if name not in (None, "train", "test"):
            raise ValueError(f"split={name!r} must be 'train', 'test' or None")
        return [c for c in self.clips if name is None or c.split == name]


def write_manifest(root: str | os.PathLike[str], manifest: Manifest) -> Path:
    """Write ``ROOT/manifest.json`` atomically."""
    path = Path(root) / MANIFEST_NAME
    data = asdict(manifest)
    data["clips"] = [
        {"id": c.id, "num_frames": c.num_frames, "split": c.split, **c.info} for c in manifest.clips
    ]
    atomic_write_text(path, json.dumps(data, indent=1))
    return path


def read_manifest(root: str | os.PathLike[str]) -> Manifest:
    """Read ``ROOT/manifest.json`` (``ValueError`` if missing or of another layout version)."""
    path = Path(root) / MANIFEST_NAME
    if not path.is_file():
        raise ValueError(f"no {MANIFEST_NAME} in {root}: not a talkinghead training set")
    data = json.loads(path.read_text())
    if data.get("version") != LAYOUT_VERSION:
        raise ValueError(
            f"{path} has layout version {data.get('version')}; expected {LAYOUT_VERSION}"
        )
    clips = []
    for entry in data.pop("clips"):
        core = {k: entry.pop(k) for k in ("id", "num_frames", "split")}
        clips.append(ClipEntry(**core, info=entry))
    return Manifest(clips=clips, **data)


class ClipReader:
    """Lazy, memory-mapped access to one clip directory.

    Args:
        clip_dir: ``ROOT/clips/<id>``.
        audio_feature: which ``audio_<feature>.npy`` ``audio_features`` reads.
    """

    def __init__(self, clip_dir: str | os.PathLike[str], audio_feature: str = "logmel80") -> None:
        self.dir = Path(clip_dir)
        if not (self.dir / "clip.json").is_file():
            raise ValueError(f"{self.dir} is not a complete clip directory (no clip.json)")
        self.info: dict[str, Any] = json.loads((self.dir / "clip.json").read_text())
        self.audio_feature = audio_feature
        self._cache: dict[str, np.ndarray] = {}

    @property
    def num_frames(self) -> int:
        return int(self.info["num_frames"])

    def array(self, name: str) -> np.ndarray:
        """``<name>.npy`` memory-mapped (read-only); e.g. "frames", "pose", "mouth_open"."""
        if name not in self._cache:
            path = self.dir / f"{name}.npy"
            if not path.is_file():
                raise ValueError(f"{path} is missing")
            self._cache[name] = np.load(path, mmap_mode="r")
        return self._cache[name]

    @property
    def frames(self) -> np.ndarray:
        """(F, H, W, 3) uint8, memory-mapped."""
        return self.array("frames")

    @property
    def audio_features(self) -> np.ndarray:
        """(F, A) float32, memory-mapped."""
        return self.array(f"audio_{self.audio_feature}")

    def audio(self) -> np.ndarray:
        """(N,) float32 in [-1, 1] at 16 kHz."""
        sr, pcm = wavfile.read(self.dir / "audio.wav")
        if sr != SAMPLE_RATE:
            raise ValueError(f"{self.dir / 'audio.wav'} is at {sr} Hz; expected {SAMPLE_RATE}")
        return pcm.astype(np.float32) / 32767.0
