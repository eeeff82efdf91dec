"""Real talking-head videos -> the training layout (``talkinghead prepare``).

Each input video becomes one clip of ``dataset_layout`` (the layout ``talkinghead data synth``
writes), holding what DAWN's training stages read (dawn_spec.md §5, initial states as in §1.1):

* frames resampled to 25 fps (the source frame nearest in time to each output frame);
* one fixed face-centred square crop per clip (``face.square_crop_box`` of the median face box
  over the first second, so the crop does not jitter), resized to ``resolution``;
* the audio track as 16 kHz mono and per-frame audio features: HuBERT (``hubert``, width 1024)
  when a local model is given, otherwise weight-free log-mel (``logmel80``);
* per-frame head pose and eye openness from ``FaceAnalyzer.analyze`` on the full-resolution frame
  (the convention the generator's initial state uses); frames without a detected face repeat the
  last detection;
* the face box per frame and a mouth box (from the 68 landmarks when 3DDFA is available, else the
  lower middle of the face box), both in crop pixels.

Resumable (finished clips are skipped, half-written ones redone), parallel over files (processes),
and a video that cannot be used (corrupt, no audio, no face, too short) is reported in
``ROOT/skipped.json`` and skipped; it never stops the run.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from talkinghead.data.clip_writer import completed_clips, held_out_split, run_clip_jobs
from talkinghead.data.layout import (
    CLIPS_DIR,
    FPS,
    ClipData,
    ClipEntry,
    Manifest,
    write_clip,
    write_manifest,
)
from talkinghead.files import write_json
from talkinghead.media.video import VIDEO_SUFFIXES

__all__ = [
    "VIDEO_SUFFIXES",
    "PrepareResult",
    "clip_id_for",
    "find_videos",
    "nearest_frame_indices",
    "prepare_dataset",
    "prepare_video",
]

logger = logging.getLogger(__name__)

SKIPPED_NAME = "skipped.json"
MIN_FRAMES = 2  # a clip needs at least two frames at 25 fps
_MOUTH = slice(48, 68)  # 0-based 68-landmark indices of the lips
# no landmarks: the mouth of a detector box (forehead to chin) spans these fractions of it
_MOUTH_X, _MOUTH_Y = (0.28, 0.72), (0.66, 0.88)


@dataclass
class PrepareResult:
    """What ``prepare_dataset`` did.

    Attributes:
        manifest: the manifest written to ``ROOT/manifest.json`` (all finished clips).
        skipped: ``{"path", "reason"}`` per video that could not be used (also in skipped.json).
        written: ids of clips written by this call (the rest were already there).
    """

    manifest: Manifest
    skipped: list[dict[str, str]] = field(default_factory=list)
    written: list[str] = field(default_factory=list)


def find_videos(inputs: Sequence[str | os.PathLike[str]]) -> list[Path]:
    """Video files among ``inputs`` (files, or folders searched recursively), sorted, unique."""
    found: set[Path] = set()
    for item in inputs:
        path = Path(item)
        if path.is_dir():
            found.update(p for p in path.rglob("*") if p.suffix.lower() in VIDEO_SUFFIXES)
        elif path.is_file():
            found.add(path)
        else:
            raise ValueError(f"input {path} does not exist")
    return sorted(found)


def clip_id_for(path: Path, taken: set[str]) -> str:
    """A layout-safe clip id from the file stem; a short path hash is added on collisions."""
    stem = "".join(c if c.isalnum() or c in "-_" else "_" for c in path.stem).strip("_") or "clip"
    if stem not in taken:
        return stem
    return f"{stem}-{hashlib.sha1(str(path.resolve()).encode()).hexdigest()[:8]}"


def nearest_frame_indices(num_src: int, src_fps: float, fps: float = FPS) -> np.ndarray:
    """Source frame index nearest in time to each output frame: (F,) int, F = floor(T * fps).

    Args:
        num_src: number of decoded source frames.
        src_fps: their rate (constant frame rate assumed).
        fps: output rate.
    """
    if num_src < 1 or src_fps <= 0:
        raise ValueError(f"need frames and a positive rate, got {num_src} frames at {src_fps} fps")
    count = int(np.floor(num_src / src_fps * fps + 1e-6))
    idx = np.floor(np.arange(count) * src_fps / fps + 0.5).astype(np.int64)
    return np.minimum(idx, num_src - 1)


def _resampled(path: Path, src_fps: float, num_src: int) -> Iterator[np.ndarray]:
    """Decode ``path`` and yield its frames at 25 fps (nearest source frame, repeats allowed)."""
    from talkinghead.media.video import read_video_frames

    wanted = nearest_frame_indices(num_src, src_fps)
    k = 0
    for i, frame in enumerate(read_video_frames(path)):
        while k < len(wanted) and wanted[k] == i:
            yield frame
            k += 1
        if k == len(wanted):
            return


def _mouth_box(face: Any, crop_box: tuple[int, int, int, int], scale: float) -> np.ndarray:
    """(4,) [x0, y0, x1, y1] of the mouth in crop pixels (landmarks, else face-box fractions)."""
    if face.landmarks is not None:
        lips = face.landmarks[_MOUTH]
        x0, y0 = lips.min(0)
        x1, y1 = lips.max(0)
    else:
        bx0, by0, bx1, by1 = face.box[:4]
        x0, x1 = bx0 + (bx1 - bx0) * np.array(_MOUTH_X)
        y0, y1 = by0 + (by1 - by0) * np.array(_MOUTH_Y)
    box = (np.array([x0, y0, x1, y1]) - np.array(crop_box[:2] * 2)) * scale
    return np.clip(box, 0, (crop_box[2] - crop_box[0]) * scale - 1)


def _analyze_frames(analyzer: Any, frames: list[np.ndarray]) -> list[Any | None]:
    from talkinghead.face.analysis import FaceNotFoundError

    states: list[Any | None] = []
    for frame in frames:
        try:
            states.append(analyzer.analyze(frame))
        except FaceNotFoundError:
            states.append(None)
    return states


def prepare_video(
    path: str | os.PathLike[str],
    analyzer: Any,
    *,
    resolution: int,
    audio_encoder: Any | None = None,
) -> ClipData:
    """One video -> ``ClipData`` at 25 fps (see the module docstring).

    Args:
        path: the video (any fps and size, with an audio track).
        analyzer: a ``FaceAnalyzer``.
        resolution: side S of the square crops.
        audio_encoder: a ``HubertFeatureExtractor``, or None for 80 log-mel bands.

    Returns:
        the clip; frames (F, S, S, 3) uint8, F = min(video, audio) length at 25 fps.

    Raises:
        ValueError: the video cannot be decoded, has no (usable) audio, no face or < 2 frames.
    """
    from talkinghead.face.crop import crop_and_resize, face_bbox_in_crop, square_crop_box
    from talkinghead.media.audio import load_audio, num_video_frames
    from talkinghead.media.audio_features import log_mel_features
    from talkinghead.media.video import probe_video

    path = Path(path)
    facts = probe_video(path)
    if not facts["has_audio"]:
        raise ValueError(f"{path} has no audio track")
    if not facts["fps"] or not facts["num_frames"]:
        raise ValueError(f"{path} states no frame rate or has no frames")
    audio = load_audio(path)
    num_frames = min(
        len(nearest_frame_indices(facts["num_frames"], facts["fps"])),
        num_video_frames(len(audio), fps=FPS),
    )
    if num_frames < MIN_FRAMES:
        raise ValueError(f"{path} is too short: {num_frames} frames at {FPS} fps")
    frames_iter = _resampled(path, facts["fps"], facts["num_frames"])
    head = [f for _, f in zip(range(min(FPS, num_frames)), frames_iter)]
    head_states = _analyze_frames(analyzer, head)
    found = [s.box[:4] for s in head_states if s is not None]
    if not found:
        raise ValueError(f"no face found in the first second of {path}")
    h, w = head[0].shape[:2]
    crop_box = square_crop_box(np.median(found, axis=0), (h, w), analyzer.crop_margin)
    scale = resolution / (crop_box[2] - crop_box[0])
    last = next(s for s in head_states if s is not None)
    crops, poses, eyes, bboxes, mouths = [], [], [], [], []

    def add(frame: np.ndarray, state: Any | None) -> None:
        nonlocal last
        last = state if state is not None else last  # hold the last detection through misses
        crops.append(crop_and_resize(frame, crop_box, resolution))
        poses.append(last.pose)
        eyes.append(last.eye)
        box = face_bbox_in_crop(last.box, crop_box).astype(np.float64)
        box[:4] *= scale
        box[4:] = resolution
        bboxes.append(box)
        mouths.append(_mouth_box(last, crop_box, scale))

    for frame, state in zip(head, head_states):
        add(frame, state)
    for frame in frames_iter:
        if len(crops) >= num_frames:
            break
        add(frame, _analyze_frames(analyzer, [frame])[0])
    num_frames = min(num_frames, len(crops))  # the container may hold fewer frames than stated
    if num_frames < MIN_FRAMES:
        raise ValueError(f"{path} decoded to only {num_frames} frames")
    if audio_encoder is not None:
        feats = audio_encoder(audio, num_frames).float().cpu().numpy()
    else:
        feats = log_mel_features(audio, num_frames).numpy()
    return ClipData(
        frames=np.stack(crops[:num_frames]),
        audio=audio,
        audio_features=feats,
        pose=np.asarray(poses[:num_frames], np.float32),
        eye=np.asarray(eyes[:num_frames], np.float32),
        bbox=np.asarray(bboxes[:num_frames], np.float32),
        mouth_box=np.asarray(mouths[:num_frames], np.float32),
        info={
            "source": str(path),
            "source_fps": facts["fps"],
            "source_size": [int(facts["width"]), int(facts["height"])],
            "crop_box": [int(v) for v in crop_box],
            "detector": last.detector,
        },
    )


# -- worker processes ------------------------------------------------------------------------------

_WORKER: dict[str, Any] = {}


def _worker_init(face3d_dir: str | None, hubert_dir: str | None, threads: int) -> None:
    """Build the face analyzer (and HuBERT) once per process."""
    import torch

    from talkinghead.face.analysis import FaceAnalyzer

    if threads > 0:
        # one process per file already uses the cores; nested thread pools would oversubscribe
        torch.set_num_threads(threads)
        cv2.setNumThreads(threads)
    _WORKER["analyzer"] = FaceAnalyzer(face3d_dir)
    _WORKER["encoder"] = None
    if hubert_dir is not None:
        from talkinghead.media.audio_features import HubertFeatureExtractor

        _WORKER["encoder"] = HubertFeatureExtractor.from_pretrained(hubert_dir)


def _video_job(job: tuple) -> tuple[str, str, int, str | None]:
    """Prepare and write one video; returns (clip_id, path, frames, error or None)."""
    clips_dir, clip_id, path, settings, video = job
    try:
        clip = prepare_video(
            path,
            _WORKER["analyzer"],
            resolution=settings["resolution"],
            audio_encoder=_WORKER["encoder"],
        )
        clip.info["settings"] = settings
        write_clip(clips_dir, clip_id, clip, audio_feature=settings["audio_feature"], video=video)
    except Exception as err:  # any failure of one file must not stop the others
        logger.debug("skipping %s", path, exc_info=True)
        return clip_id, str(path), 0, f"{type(err).__name__}: {err}".splitlines()[0]
    return clip_id, str(path), clip.num_frames, None


def prepare_dataset(
    inputs: Sequence[str | os.PathLike[str]],
    out_dir: str | os.PathLike[str],
    *,
    resolution: int = 256,
    face3d_dir: str | os.PathLike[str] | None = None,
    hubert_dir: str | os.PathLike[str] | None = None,
    workers: int = 1,
    test_fraction: float = 0.1,
    seed: int = 0,
    video: bool = True,
    progress: bool = True,
) -> PrepareResult:
    """Prepare every video of ``inputs`` into ``out_dir`` (the ``dataset_layout`` format).

    Args:
        inputs: video files and/or folders (searched recursively for ``VIDEO_SUFFIXES``).
        out_dir: training-set root; clips already there are kept (same settings required).
        resolution: crop side S in pixels (128 or 256 for DAWN).
        face3d_dir: 3DDFA_V2 assets for FaceBoxes + pose/eyes (None: weight-free fallback,
            neutral pose and default eyes: only useful for plumbing checks).
        hubert_dir: local HuBERT folder -> ``hubert`` features; None -> ``logmel80``.
        workers: parallel processes (each loads its own analyzer / HuBERT).
        test_fraction: share of clips held out (split ``test``), by a hash of the clip id.
        seed: salt of that split.
        video: also write a viewable ``video.mp4`` per clip.
        progress: show a progress bar.

    Returns:
        ``PrepareResult`` (manifest, skipped videos, newly written ids).
    """
    if resolution < 32 or workers < 1:
        raise ValueError(f"resolution={resolution} must be >= 32 and workers={workers} >= 1")
    if not 0.0 <= test_fraction < 1.0:
        raise ValueError(f"test_fraction={test_fraction} must be in [0, 1)")
    audio_feature, audio_dim = "logmel80", 80
    if hubert_dir is not None:
        config = json.loads((Path(hubert_dir) / "config.json").read_text())
        audio_feature, audio_dim = "hubert", int(config["hidden_size"])
    settings = {"kind": "prepare", "resolution": resolution, "audio_feature": audio_feature}
    videos = find_videos(inputs)
    if not videos:
        raise ValueError(
            f"no video files ({', '.join(VIDEO_SUFFIXES)}) in {list(map(str, inputs))}"
        )
    root = Path(out_dir)
    clips_dir = root / CLIPS_DIR
    taken: set[str] = set()
    ids = []
    for path in videos:
        ids.append(clip_id_for(path, taken))
        taken.add(ids[-1])
    completed = completed_clips(clips_dir, ids, "settings", settings)
    frames = {cid: int(info["num_frames"]) for cid, info in completed.items()}
    jobs = [
        (clips_dir, cid, path, settings, video)
        for cid, path in zip(ids, videos)
        if cid not in frames
    ]
    skipped: list[dict[str, str]] = []
    written: list[str] = []
    init_args = (
        None if face3d_dir is None else str(face3d_dir),
        None if hubert_dir is None else str(hubert_dir),
        1 if workers > 1 else 0,
    )
    try:
        for clip_id, path, count, error in run_clip_jobs(
            jobs,
            _video_job,
            workers=workers,
            total=len(ids),
            initializer=_worker_init,
            initargs=init_args,
            progress=progress,
            unit="video",
        ):
            if error is None:
                frames[clip_id] = count
                written.append(clip_id)
            else:
                logger.warning("skipped %s: %s", path, error)
                skipped.append({"path": path, "reason": error})
    finally:
        _WORKER.clear()
    done = [cid for cid in ids if cid in frames]
    sources = dict(zip(ids, map(str, videos)))
    entries = [
        ClipEntry(cid, frames[cid], "test" if t else "train", {"source": sources[cid]})
        for cid, t in zip(done, held_out_split(done, seed, test_fraction))
    ]
    manifest = Manifest(
        resolution=resolution,
        audio_feature=audio_feature,
        audio_dim=audio_dim,
        clips=entries,
        generator={**settings, "seed": seed, "test_fraction": test_fraction},
    )
    write_manifest(root, manifest)
    write_json(root / SKIPPED_NAME, sorted(skipped, key=lambda s: s["path"]))
    return PrepareResult(manifest, skipped, written)
