"""Per-video evaluation features with a resumable on-disk cache.

``extract_features`` decodes a video once and computes everything the Table 1 metrics need from
it: Inception pool3 features (FID), I3D features of 16/32-frame clips (FVD), SyncNet distances
over +-vshift offsets on syncnet_python's face-track crops (LSE), ArcFace embeddings of
5-point-aligned faces (CSIM), a motion signal and audio beats (BAS), an eye-openness curve
(Blink/s). Next to them it records how each was made (``motion_source``, ``sync_crop``,
``csim_alignment``, ``face_detector``) for the report's protocol section.

Results go to ``<cache_dir>/<role>-<stem>.npz`` keyed by the file's size and mtime and by
``PROTOCOL_VERSION``; face-dependent entries are also keyed by the face setup (which detector,
landmarks, S3FD), so adding face weights recomputes only those. A rerun (e.g. after an
interruption, or after adding weights) reuses what is there and computes only what is missing.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from functools import cached_property
from pathlib import Path

import numpy as np
import torch
from torch import nn

from talkinghead.eval.audio_features import SYNC_SAMPLE_RATE, audio_beats
from talkinghead.eval.face_align import align_face, box_crop, five_points
from talkinghead.eval.face_signals import (
    HEAD_LANDMARKS,
    box_motion,
    detector_name,
    eye_openness,
    face_boxes,
    face_landmarks,
    phase_motion,
)
from talkinghead.eval.face_track import FaceTrack, build_tracks, crop_track, effective_min_track
from talkinghead.eval.i3d import i3d_features, video_clips
from talkinghead.eval.media import read_audio, read_video, resample_frames
from talkinghead.eval.metrics import motion_beats, sync_distances
from talkinghead.eval.networks import MetricNetworks
from talkinghead.eval.s3fd import detect_faces
from talkinghead.eval.syncnet import SYNC_FPS, syncnet_features
from talkinghead.face.analysis import FaceAnalyzer
from talkinghead.files import atomic_output

logger = logging.getLogger(__name__)

Features = dict[str, np.ndarray]
PROTOCOL_VERSION = 2  # bump when a feature's definition changes: older caches are recomputed
SAMPLES_PER_SYNC_FRAME = SYNC_SAMPLE_RATE // SYNC_FPS  # 640 audio samples per 25 fps frame
# entries that depend on the face setup (detector, landmarks, S3FD)
FACE_KEYS = (
    "motion",
    "motion_source",
    "openness",
    "openness_source",
    "sync_dists",
    "sync_crop",
    "arcface",
    "csim_alignment",
    "face_detector",
)


def file_signature(path: Path) -> str:
    st = path.stat()
    return f"{path.name}:{st.st_size}:{st.st_mtime_ns}:protocol{PROTOCOL_VERSION}"


def face_setup(nets: MetricNetworks) -> str:
    """Which face machinery the face-dependent features come from, e.g. ``haar+s3fd``."""
    face = nets.face_analyzer
    parts = [detector_name(face)]
    if face.regressor is not None:
        parts.append("landmarks")
    if nets.get("s3fd") is not None:
        parts.append("s3fd")
    return "+".join(parts)


def _load_cache(cache_file: Path, signature: str, setup: str) -> Features:
    if not cache_file.is_file():
        return {}
    try:
        with np.load(cache_file, allow_pickle=False) as data:
            if str(data["_signature"]) != signature:
                return {}
            feats = {k: data[k] for k in data.files}
    except (OSError, ValueError, KeyError) as err:
        logger.warning("ignoring unreadable cache %s (%s)", cache_file, err)
        return {}
    if str(feats.get("_face_setup", "")) != setup:
        feats = {k: v for k, v in feats.items() if k not in FACE_KEYS}
    return feats


def _save_cache(cache_file: Path, feats: Features) -> None:
    with atomic_output(cache_file, suffix=".npz") as tmp:  # never a half-written cache
        np.savez(tmp, **feats)


def _batched(
    model: nn.Module, images: np.ndarray, batch_size: int, device: torch.device | str
) -> np.ndarray:
    """Run an image network on uint8 (N, H, W, 3) in batches -> (N, D)."""
    out = []
    with torch.no_grad():
        for start in range(0, len(images), batch_size):
            x = torch.from_numpy(np.ascontiguousarray(images[start : start + batch_size])).to(
                device
            )
            x = x.permute(0, 3, 1, 2).float() / 255.0
            out.append(model(x).float().cpu().numpy())
    return np.concatenate(out)


def _sidecar_audio(video: Path) -> np.ndarray | None:
    for suffix in (".wav", ".mp3", ".flac"):
        side = video.with_suffix(suffix)
        if side.is_file():
            return read_audio(side, SYNC_SAMPLE_RATE)
    return None


def subsample(n: int, limit: int | None) -> np.ndarray:
    """Indices of ``limit`` evenly spaced frames of ``n`` (all when ``limit`` is None or >= n)."""
    if limit is None or n <= limit:
        return np.arange(n)
    return np.linspace(0, n - 1, limit).round().astype(int)


class VideoFaces:
    """The face boxes and landmarks of one video, computed on first use."""

    def __init__(self, frames: np.ndarray, analyzer: FaceAnalyzer) -> None:
        self.frames = frames
        self.analyzer = analyzer

    @cached_property
    def _boxes_found(self) -> tuple[np.ndarray, bool]:
        return face_boxes(self.frames, self.analyzer)

    @property
    def boxes(self) -> np.ndarray:
        """(T, 4) face boxes ``[x0, y0, x1, y1]``."""
        return self._boxes_found[0]

    @property
    def detector(self) -> str:
        """``faceboxes``, ``haar`` or ``centre``, plus ``(no face found)`` when nothing was."""
        name = detector_name(self.analyzer)
        return name if self._boxes_found[1] else f"{name} (no face found: centred square)"

    @cached_property
    def landmarks(self) -> np.ndarray | None:
        """(T, 68, 2) 3DDFA landmarks, or None without the 3DDFA assets or without a face."""
        if not self._boxes_found[1]:
            return None
        return face_landmarks(self.frames, self.boxes, self.analyzer)


def extract_features(
    video: Path,
    nets: MetricNetworks,
    cache_file: Path | None,
    *,
    batch_size: int = 16,
    vshift: int = 15,
    fid_max_frames: int | None = None,
    csim_max_frames: int = 32,
    device: torch.device | str = "cpu",
) -> Features:
    """Features of one video (see module docstring); raises UnreadableVideoError if undecodable."""
    signature, setup = file_signature(video), face_setup(nets)
    feats = _load_cache(cache_file, signature, setup) if cache_file is not None else {}
    wanted = ["meta", "motion", "motion_source", "openness", "openness_source", "audio_beats"]
    wanted.append("face_detector")
    wanted += [
        k
        for k, net in (
            ("inception", "inception"),
            ("i3d16", "i3d"),
            ("i3d32", "i3d"),
            ("sync_dists", "syncnet"),
            ("arcface", "arcface"),
        )
        if nets.get(net)
    ]
    if all(k in feats for k in wanted):
        feats["motion_beats"] = motion_beats(feats["motion"])
        return feats

    frames, fps = read_video(video)
    t, h, w = frames.shape[:3]
    faces = VideoFaces(frames, nets.face_analyzer)
    audio = read_audio(video, SYNC_SAMPLE_RATE)
    if audio is None:
        audio = _sidecar_audio(video)
    feats["_signature"] = np.array(signature)
    feats["_face_setup"] = np.array(setup)
    feats["meta"] = np.array([fps, t, h, w, 0 if audio is None else len(audio) / SYNC_SAMPLE_RATE])

    steps: dict[str, Callable[[], dict[str, np.ndarray]]] = {
        "motion": lambda: _motion(video, frames, faces),
        "openness": lambda: _openness(video, frames, faces),
        "face_detector": lambda: {"face_detector": np.array(faces.detector)},
        "audio_beats": lambda: {
            "audio_beats": np.zeros(0, np.int64)
            if audio is None
            else audio_beats(audio, SYNC_SAMPLE_RATE, fps, t)
        },
    }
    if (m := nets.get("inception")) is not None:
        steps["inception"] = lambda: {
            "inception": _batched(m, frames[subsample(t, fid_max_frames)], batch_size, device)
        }
    if (m3 := nets.get("i3d")) is not None:
        steps["i3d16"] = lambda: {
            "i3d16": i3d_features(m3, video_clips(frames, 16), max(1, batch_size // 4), device)
        }
        steps["i3d32"] = lambda: {
            "i3d32": i3d_features(m3, video_clips(frames, 32), max(1, batch_size // 8), device)
        }
    if (s := nets.get("syncnet")) is not None and audio is not None:
        steps["sync_dists"] = lambda: _sync(
            s, nets.get("s3fd"), frames, fps, faces, audio, vshift, batch_size
        )
    if (a := nets.get("arcface")) is not None:
        steps["arcface"] = lambda: _arcface(a, frames, faces, csim_max_frames, batch_size, device)
    for key, step in steps.items():
        if key not in feats:
            feats.update(step())
            if cache_file is not None:
                _save_cache(cache_file, feats)
    feats["motion_beats"] = motion_beats(feats["motion"])
    return feats


def _motion(video: Path, frames: np.ndarray, faces: VideoFaces) -> dict[str, np.ndarray]:
    """BAS motion, best source first: pose sidecar, landmarks, face box, phase correlation."""
    side = video.with_name(video.stem + ".pose.npy")
    if side.is_file():
        motion, source = np.load(side).astype(np.float64), f"pose sidecar ({side.name})"
    elif faces.landmarks is not None:
        motion = faces.landmarks[:, HEAD_LANDMARKS]  # -> (T, 48, 2): per-joint speeds
        source = "3DDFA landmarks (48 points, lips left out)"
    elif "no face found" not in faces.detector:
        motion, source = box_motion(faces.boxes, frames.shape[1:3]), f"{faces.detector} face box"
    else:
        motion, source = phase_motion(frames), "phase correlation (no face found)"
    return {"motion": motion, "motion_source": np.array(source)}


def _openness(video: Path, frames: np.ndarray, faces: VideoFaces) -> dict[str, np.ndarray]:
    side = video.with_name(video.stem + ".blink.npy")
    if side.is_file():
        ratios = np.load(side).astype(np.float64)
        openness = ratios.mean(axis=1) if ratios.ndim == 2 else ratios
        return {"openness": openness, "openness_source": np.array(f"eye ratios ({side.name})")}
    source = f"eye-band edge energy of the {faces.detector} face box"
    return {"openness": eye_openness(frames, faces.boxes), "openness_source": np.array(source)}


def _sync_track(s3fd: nn.Module | None, clip: np.ndarray) -> tuple[FaceTrack | None, str]:
    """The longest S3FD track of a 25 fps clip (syncnet_python's), or None and why not."""
    if s3fd is None:
        return None, "no sfd_face.pth"
    detections = [detect_faces(s3fd, frame) for frame in clip]
    tracks = build_tracks(detections, min_track=effective_min_track(len(clip)))
    if not tracks:
        found = sum(len(d) > 0 for d in detections)
        return None, f"no S3FD track (faces in {found} of {len(clip)} frames)"
    return max(tracks, key=lambda tr: len(tr.frames)), "S3FD track"


def _sync(
    model: nn.Module,
    s3fd: nn.Module | None,
    frames: np.ndarray,
    fps: float,
    faces: VideoFaces,
    audio: np.ndarray,
    vshift: int,
    batch_size: int,
) -> dict[str, np.ndarray]:
    """SyncNet distances (W, 2 vshift + 1) on syncnet_python crops of the face track."""
    idx = resample_frames(np.arange(len(frames)), fps, SYNC_FPS)
    if min(len(idx), len(audio) // SAMPLES_PER_SYNC_FRAME) < 6:
        logger.warning("clip too short for SyncNet (needs 6 frames at 25 fps); LSE skipped")
        return {"sync_dists": np.zeros((0, 2 * vshift + 1)), "sync_crop": np.array("too short")}
    clip = frames[idx]
    track, how = _sync_track(s3fd, clip)
    if track is None:
        track = FaceTrack(np.arange(len(clip)), faces.boxes[idx], len(clip))
        how = f"{faces.detector} boxes ({how})"
    first, last = int(track.frames[0]), int(track.frames[-1])
    how += f", frames {first}-{last} of {len(clip)} at 25 fps"
    crops = crop_track(clip[track.frames], track.boxes)[..., ::-1]  # RGB -> BGR as cv2.imread
    # syncnet_python cuts the audio to the track: (first / 25 s, (last + 1) / 25 s)
    segment = audio[first * SAMPLES_PER_SYNC_FRAME : (last + 1) * SAMPLES_PER_SYNC_FRAME]
    if min(len(crops), len(segment) // SAMPLES_PER_SYNC_FRAME) < 6:
        return {"sync_dists": np.zeros((0, 2 * vshift + 1)), "sync_crop": np.array(how)}
    video_f, audio_f = syncnet_features(model, crops, segment, batch_size)
    dists = sync_distances(video_f, audio_f, vshift).numpy()
    return {"sync_dists": dists, "sync_crop": np.array(how)}


def _arcface(
    model: nn.Module,
    frames: np.ndarray,
    faces: VideoFaces,
    max_frames: int,
    batch_size: int,
    device: torch.device | str,
) -> dict[str, np.ndarray]:
    """ArcFace embeddings (N, 512) of ``max_frames`` evenly spaced frames, 5-point aligned."""
    idx = subsample(len(frames), max_frames)
    if faces.landmarks is not None:
        crops = np.stack([align_face(frames[i], five_points(faces.landmarks[i])) for i in idx])
        how = "5-point similarity to the ArcFace template (3DDFA landmarks)"
    else:
        crops = np.stack([box_crop(frames[i], faces.boxes[i]) for i in idx])
        how = f"square {faces.detector} box crop (no landmarks: not aligned)"
    emb = _batched(model, crops, batch_size, device)
    return {"arcface": emb, "csim_alignment": np.array(how)}
