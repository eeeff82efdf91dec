"""Per-video evaluation features with a resumable on-disk cache.

``extract_features`` decodes a video once and computes everything the Table 1 metrics need from
it: Inception pool3 features (FID), I3D features of 16/32-frame clips (FVD), SyncNet distances
over +-vshift offsets (LSE), ArcFace embeddings (CSIM), a head-motion curve and audio beats
(BAS), an eye-openness curve (Blink/s). Results go to ``<cache_dir>/<role>-<stem>.npz`` keyed by
the file's size and mtime; a rerun (e.g. after an interruption, or after adding weights) reuses
what is there and computes only what is missing.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from torch import nn

from talkinghead.eval.audio_features import SYNC_SAMPLE_RATE, audio_beats
from talkinghead.eval.face_signals import crop_faces, eye_openness, face_boxes, head_motion_curve
from talkinghead.eval.i3d import i3d_features, video_clips
from talkinghead.eval.media import read_audio, read_video, resample_frames
from talkinghead.eval.metrics import motion_beats, sync_distances
from talkinghead.eval.networks import MetricNetworks
from talkinghead.eval.syncnet import SYNC_FPS, syncnet_features
from talkinghead.files import atomic_output

logger = logging.getLogger(__name__)

Features = dict[str, np.ndarray]


def file_signature(path: Path) -> str:
    st = path.stat()
    return f"{path.name}:{st.st_size}:{st.st_mtime_ns}"


def _load_cache(cache_file: Path, signature: str) -> Features:
    if not cache_file.is_file():
        return {}
    try:
        with np.load(cache_file, allow_pickle=False) as data:
            if str(data["_signature"]) != signature:
                return {}
            return {k: data[k] for k in data.files}
    except (OSError, ValueError, KeyError) as err:
        logger.warning("ignoring unreadable cache %s (%s)", cache_file, err)
        return {}


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


def _subsample(n: int, limit: int | None) -> np.ndarray:
    if limit is None or n <= limit:
        return np.arange(n)
    return np.linspace(0, n - 1, limit).round().astype(int)


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
    signature = file_signature(video)
    feats = _load_cache(cache_file, signature) if cache_file is not None else {}
    wanted = ["meta", "motion", "openness", "audio_beats", "motion_beats"]
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
        return feats

    frames, fps = read_video(video)
    t, h, w = frames.shape[:3]
    boxes_cache: list[np.ndarray] = []

    def boxes() -> np.ndarray:
        if not boxes_cache:
            boxes_cache.append(face_boxes(frames))
        return boxes_cache[0]

    audio = read_audio(video, SYNC_SAMPLE_RATE)
    if audio is None:
        audio = _sidecar_audio(video)
    feats["_signature"] = np.array(signature)
    feats["meta"] = np.array([fps, t, h, w, 0 if audio is None else len(audio) / SYNC_SAMPLE_RATE])

    steps: dict[str, Callable[[], np.ndarray]] = {
        "motion": lambda: _motion(video, frames, boxes()),
        "openness": lambda: _openness(video, frames, boxes()),
        "audio_beats": lambda: (
            np.zeros(0, np.int64) if audio is None else audio_beats(audio, SYNC_SAMPLE_RATE, fps, t)
        ),
    }
    if (m := nets.get("inception")) is not None:
        steps["inception"] = lambda: _batched(
            m, frames[_subsample(t, fid_max_frames)], batch_size, device
        )
    if (m3 := nets.get("i3d")) is not None:
        steps["i3d16"] = lambda: i3d_features(
            m3, video_clips(frames, 16), max(1, batch_size // 4), device
        )
        steps["i3d32"] = lambda: i3d_features(
            m3, video_clips(frames, 32), max(1, batch_size // 8), device
        )
    if (s := nets.get("syncnet")) is not None and audio is not None:
        steps["sync_dists"] = lambda: _sync(s, frames, fps, boxes(), audio, vshift, batch_size)
    if (a := nets.get("arcface")) is not None:
        steps["arcface"] = lambda: _batched(
            a,
            crop_faces(
                frames[_subsample(t, csim_max_frames)],
                boxes()[_subsample(t, csim_max_frames)],
                112,
                1.0,
            ),
            batch_size,
            device,
        )
    for key, step in steps.items():
        if key not in feats:
            feats[key] = step()
            if cache_file is not None:
                _save_cache(cache_file, feats)
    feats["motion_beats"] = motion_beats(feats["motion"])
    if cache_file is not None:
        _save_cache(cache_file, feats)
    return feats


def _motion(video: Path, frames: np.ndarray, boxes: np.ndarray) -> np.ndarray:
    side = video.with_name(video.stem + ".pose.npy")
    return np.load(side).astype(np.float64) if side.is_file() else head_motion_curve(frames, boxes)


def _openness(video: Path, frames: np.ndarray, boxes: np.ndarray) -> np.ndarray:
    side = video.with_name(video.stem + ".blink.npy")
    if side.is_file():
        ratios = np.load(side).astype(np.float64)
        return ratios.mean(axis=1) if ratios.ndim == 2 else ratios
    return eye_openness(frames, boxes)


def _sync(
    model: nn.Module,
    frames: np.ndarray,
    fps: float,
    boxes: np.ndarray,
    audio: np.ndarray,
    vshift: int,
    batch_size: int,
) -> np.ndarray:
    idx = resample_frames(np.arange(len(frames)), fps, SYNC_FPS)
    if min(len(idx), len(audio) // 640) < 6:
        logger.warning("clip too short for SyncNet (needs 6 frames at 25 fps); LSE skipped")
        return np.zeros((0, 2 * vshift + 1))
    crops = crop_faces(frames[idx], boxes[idx], 224)[..., ::-1]  # RGB -> BGR like cv2.imread
    video_f, audio_f = syncnet_features(model, crops, audio, batch_size)
    return sync_distances(video_f, audio_f, vshift).numpy()
