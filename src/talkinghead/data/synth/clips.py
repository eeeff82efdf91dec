"""Synthetic talking faces: procedurally drawn heads that speak, blink and move, with ground truth.

The training data of ``talkinghead data synth``. Each clip (deterministic by seed) has:

* a random person (``synth/style.py``: ``sample_style``) drawn by ``synth/face.py``: ``render_frame``;
* speech (``synth_voice``: espeak-ng sentences or the built-in formant voice);
* per-frame states (``sample_motion``): smooth random head pose drift (yaw, pitch, roll, translation,
  scale), blinks every 2-6 s lasting 0.15-0.25 s, and a mouth opening that follows the loudness
  envelope of the actual waveform (RMS per 40 ms frame).

``write_synth_dataset`` writes many clips in the training layout (``dataset_layout``), in parallel
and resumably, with a deterministic held-out test split.

Ground truth per frame follows the DAWN conventions (spec §1.1, §5.3): pose = [yaw, pitch, roll in
degrees, scale ~4.79e-4, tx ~56.5, ty ~64.9] (tx/ty move like 3DDFA's 120-px crop coordinates,
ty up), eye = [left, right] openness ratios (vertical / horizontal, ~0.3 open, 0.05 closed; "left"
is the subject's left = image right), face bbox [x_min, x_max, y_min, y_max, H, W], mouth box
[x0, y0, x1, y1], mouth_open in [0, 1], blink (1 = closed).
"""

from __future__ import annotations

import dataclasses
import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import cv2
import numpy as np
from scipy.ndimage import gaussian_filter1d

from talkinghead.data.synth.face import FrameState, render_frame
from talkinghead.data.synth.style import FaceStyle, render_background, sample_style
from talkinghead.data.synth.voice import SAMPLE_RATE, loudness_envelope, synthesize_speech
from talkinghead.media.audio import num_video_frames

if TYPE_CHECKING:
    from talkinghead.data.layout import Manifest

__all__ = [
    "FPS",
    "SynthClip",
    "blink_openness",
    "clip_style",
    "info_style",
    "mouth_from_envelope",
    "person_seed",
    "pose_vector",
    "sample_motion",
    "synthesize_clip",
    "write_synth_dataset",
]

logger = logging.getLogger(__name__)

FPS = 25
AUDIO_FEATURE = "logmel80"  # per-frame audio feature written with each clip
NEUTRAL_POSE = (4.79e-4, 56.5, 64.9)  # 3DDFA scale, tx, ty of a centred face (spec §1.1)


@dataclass
class SynthClip:
    """One synthetic clip: F frames at 25 fps and its speech and ground truth (see module doc)."""

    frames: np.ndarray  # (F, H, W, 3) uint8
    audio: np.ndarray  # (N,) float32 at 16 kHz
    pose: np.ndarray  # (F, 6) float32
    eye: np.ndarray  # (F, 2) float32
    bbox: np.ndarray  # (F, 6) float32
    mouth_box: np.ndarray  # (F, 4) float32
    mouth_open: np.ndarray  # (F,) float32 in [0, 1]
    blink: np.ndarray  # (F,) uint8, 1 = eyes closed
    voice: str  # "espeak-ng" or "formant"
    style: FaceStyle


def _drift(rng: np.random.Generator, n: int, std: float, sigma: float) -> np.ndarray:
    """Smooth random signal: white noise low-passed by a Gaussian of ``sigma`` frames, std ``std``."""
    noise = gaussian_filter1d(rng.standard_normal(n), sigma, mode="reflect")
    return noise * std * np.sqrt(2 * np.sqrt(np.pi) * sigma)  # filtered white noise has std 1/that


def blink_openness(rng: np.random.Generator, num_frames: int) -> np.ndarray:
    """Eye openness per frame (1 open, 0 closed): blinks every 2-6 s lasting 0.15-0.25 s.

    Returns:
        (F,) float64 in [0, 1].
    """
    t = np.arange(num_frames) / FPS
    openness = np.ones(num_frames)
    start = rng.uniform(0.3, 2.5)
    while start < num_frames / FPS:
        duration = rng.uniform(0.15, 0.25)
        # lids fall quickly, stay shut briefly and rise more slowly, as in real blinks
        profile = np.interp((t - start) / duration, [0.0, 0.35, 0.5, 1.0], [1.0, 0.0, 0.0, 1.0])
        openness = np.minimum(openness, profile)
        start += duration + rng.uniform(2.0, 6.0)
    return openness


def mouth_from_envelope(envelope: np.ndarray) -> np.ndarray:
    """Mouth opening in [0, 1] from the per-frame RMS (95th percentile = fully open), smoothed."""
    ref = max(float(np.percentile(envelope, 95)), 1e-6)
    opening = np.clip(envelope / ref, 0.0, 1.0) ** 0.8
    return np.convolve(np.pad(opening, 1, mode="edge"), [0.25, 0.5, 0.25], mode="valid")


def sample_motion(rng: np.random.Generator, mouth_open: np.ndarray) -> list[FrameState]:
    """Per-frame states: smooth head drift, blinks, gaze and the given mouth opening (F,)."""
    n = mouth_open.shape[0]
    nod = gaussian_filter1d(mouth_open, 3.0)  # the head dips slightly with loud syllables
    yaw = np.clip(rng.uniform(-8, 8) + _drift(rng, n, 7.0, 20.0), -25, 25)
    pitch = np.clip(rng.uniform(-4, 4) + _drift(rng, n, 4.0, 18.0) + 3.0 * nod, -15, 15)
    roll = np.clip(rng.uniform(-3, 3) + _drift(rng, n, 3.0, 25.0), -12, 12)
    scale = np.exp(np.clip(_drift(rng, n, 0.03, 30.0), -0.08, 0.08))
    dx = np.clip(_drift(rng, n, 0.02, 30.0), -0.05, 0.05)
    dy = np.clip(_drift(rng, n, 0.015, 30.0), -0.04, 0.04)
    gaze = np.clip(np.stack([_drift(rng, n, 0.2, 10.0), _drift(rng, n, 0.2, 10.0)], 1), -0.4, 0.4)
    eye_open = blink_openness(rng, n)
    return [
        FrameState(
            float(yaw[i]),
            float(pitch[i]),
            float(roll[i]),
            float(scale[i]),
            float(dx[i]),
            float(dy[i]),
            float(eye_open[i]),
            float(mouth_open[i]),
            (gaze[i, 0], gaze[i, 1]),
        )
        for i in range(n)
    ]


def pose_vector(state: FrameState) -> np.ndarray:
    """(6,) [yaw, pitch, roll, s, tx, ty] in 3DDFA units (tx/ty: 120-px crop, ty pointing up)."""
    s0, tx0, ty0 = NEUTRAL_POSE
    return np.array(
        [
            state.yaw,
            state.pitch,
            state.roll,
            s0 * state.scale,
            tx0 + 120.0 * state.dx,
            ty0 - 120.0 * state.dy,
        ],
        np.float32,
    )


def synthesize_clip(
    seed: int | Sequence[int],
    seconds: float,
    resolution: int,
    voice: str = "auto",
    zoom: float = 1.0,
    *,
    style_seed: int | Sequence[int] | None = None,
    mouth_scale: float = 1.0,
) -> SynthClip:
    """Make one clip: speech, then motion following it, then the frames.

    Args:
        seed: everything follows from it (``numpy.random.SeedSequence`` entropy).
        seconds: speech duration; F = int(seconds * 25) frames.
        resolution: frame side S in pixels (>= 32).
        voice: "auto", "espeak" or "formant" (see ``synthesize_speech``).
        zoom: camera framing (``render_frame``); changes the pixels, not the pose or eye truth.
        style_seed: the person's seed (``clip_style``); None = ``seed``. Clips that share it show
            the same person with other speech and motion.
        mouth_scale: mouth width and largest opening times this (the demo set uses a larger mouth,
            so that at 64 px the open mouth is more than a few pixels).

    Returns:
        the clip; frames (F, S, S, 3) uint8.
    """
    if resolution < 32:
        raise ValueError(f"resolution={resolution} must be >= 32 pixels")
    if seconds < 2 / FPS:
        raise ValueError(f"seconds={seconds} is too short for even two frames")
    if not 0.5 <= zoom <= 2.5:
        raise ValueError(f"zoom={zoom} is outside 0.5..2.5 (1 = the face spans 40% of the frame)")
    _, voice_seq, motion_seq = np.random.SeedSequence(seed).spawn(3)  # [0]: clip_style
    audio, voice_name = synthesize_speech(seconds, np.random.default_rng(voice_seq), voice)
    num_frames = num_video_frames(audio.shape[0], SAMPLE_RATE, FPS)
    mouth_open = mouth_from_envelope(loudness_envelope(audio, num_frames, FPS, SAMPLE_RATE))
    states = sample_motion(np.random.default_rng(motion_seq), mouth_open)
    style = clip_style(seed if style_seed is None else style_seed, mouth_scale)
    background = render_background(style, resolution)
    frames, eyes, boxes, mouths = zip(*(render_frame(style, s, background, zoom) for s in states))
    eye = np.stack(eyes)
    return SynthClip(
        frames=np.stack(frames),
        audio=audio,
        pose=np.stack([pose_vector(s) for s in states]),
        eye=eye,
        bbox=np.stack(boxes),
        mouth_box=np.stack(mouths),
        mouth_open=mouth_open.astype(np.float32),
        blink=np.array([s.eye_open < 0.5 for s in states], np.uint8),
        voice=voice_name,
        style=style,
    )


def clip_style(seed: int | Sequence[int], mouth_scale: float = 1.0) -> FaceStyle:
    """The person of the clip made from ``seed`` (as ``synthesize_clip`` draws it)."""
    style = sample_style(np.random.default_rng(np.random.SeedSequence(seed).spawn(3)[0]))
    if mouth_scale == 1.0:
        return style
    return dataclasses.replace(
        style, mouth_w=style.mouth_w * mouth_scale, max_open=style.max_open * mouth_scale
    )


def info_style(info: dict) -> FaceStyle:
    """The person of a written clip from its ``clip.json`` (``seed``, ``style_seed``, generator)."""
    scale = float(info.get("generator", {}).get("mouth_scale", 1.0))
    return clip_style(info.get("style_seed", info["seed"]), scale)


def person_seed(seed: tuple[int, int], identities: int | None) -> tuple[int, int]:
    """Clip ``(s, i)`` shows person ``(s, i mod identities)``; without a limit, its own."""
    return seed if not identities else (seed[0], seed[1] % identities)


def _clip_job(job: tuple) -> tuple[str, int, dict]:
    """Synthesise and write one clip (runs in a worker process)."""
    from talkinghead.data.layout import ClipData, write_clip
    from talkinghead.media.audio_features import log_mel_features

    clips_dir, clip_id, seed, generator, video = job
    style_seed = person_seed(seed, generator.get("identities"))
    clip = synthesize_clip(
        seed,
        generator["seconds"],
        generator["resolution"],
        generator["voice"],
        generator.get("zoom", 1.0),
        style_seed=style_seed,
        mouth_scale=generator.get("mouth_scale", 1.0),
    )
    features = log_mel_features(clip.audio, clip.frames.shape[0]).numpy()
    info = {"voice": clip.voice, "seed": list(seed), "source": "synth", "generator": generator}
    if style_seed != seed:
        info["style_seed"] = list(style_seed)
    data = ClipData(
        frames=clip.frames,
        audio=clip.audio,
        audio_features=features,
        pose=clip.pose,
        eye=clip.eye,
        bbox=clip.bbox,
        mouth_box=clip.mouth_box,
        extras={"mouth_open": clip.mouth_open, "blink": clip.blink},
        info=info,
    )
    write_clip(clips_dir, clip_id, data, audio_feature=AUDIO_FEATURE, video=video)
    return clip_id, clip.frames.shape[0], {"voice": clip.voice}


def _worker_init() -> None:
    # one process per clip already uses every core; nested thread pools would oversubscribe
    import torch

    torch.set_num_threads(1)
    cv2.setNumThreads(1)


def write_synth_dataset(
    out_dir: str | os.PathLike[str],
    *,
    num_clips: int,
    seconds: float,
    resolution: int,
    seed: int = 0,
    workers: int = 1,
    test_fraction: float = 0.1,
    voice: str = "auto",
    zoom: float = 1.0,
    identities: int | None = None,
    mouth_scale: float = 1.0,
    video: bool = True,
    progress: bool = True,
) -> Manifest:
    """Write ``num_clips`` synthetic clips in the training layout (``dataset_layout``).

    ``identities``: only that many people (clip ``i`` shows the person of clip ``i mod
    identities``), each with many clips; None = a new person per clip. ``mouth_scale``: see
    ``synthesize_clip``.

    Resumable: clips already in ``OUT_DIR/clips`` are kept (they must come from the same
    settings), half-written ones are removed and redone. Clip ``i`` depends only on
    ``(seed, i)``, so the result is the same for any ``workers``.

    Returns:
        the manifest written to ``OUT_DIR/manifest.json``.
    """
    from talkinghead.data.clip_writer import completed_clips, held_out_split, run_clip_jobs
    from talkinghead.data.layout import CLIPS_DIR, ClipEntry, Manifest, write_manifest

    if num_clips < 1 or workers < 1:
        raise ValueError(f"num_clips={num_clips} and workers={workers} must be >= 1")
    if identities is not None and identities < 1:
        raise ValueError(f"identities={identities} must be >= 1 (or None: a person per clip)")
    if mouth_scale <= 0:
        raise ValueError(f"mouth_scale={mouth_scale} must be > 0")
    if not 0.0 <= test_fraction < 1.0:
        raise ValueError(f"test_fraction={test_fraction} must be in [0, 1)")
    generator = {
        "kind": "synth",
        "seed": seed,
        "seconds": seconds,
        "resolution": resolution,
        "voice": voice,
    }
    # sets made before these options existed stay resumable
    if zoom != 1.0:
        generator["zoom"] = zoom
    if identities:
        generator["identities"] = identities
    if mouth_scale != 1.0:
        generator["mouth_scale"] = mouth_scale
    clips_dir = Path(out_dir) / CLIPS_DIR
    ids = [f"{i:06d}" for i in range(num_clips)]
    completed = completed_clips(clips_dir, ids, "generator", generator)
    results = {
        cid: (info["num_frames"], {"voice": info["voice"]}) for cid, info in completed.items()
    }
    jobs = [
        (clips_dir, cid, (seed, i), generator, video)
        for i, cid in enumerate(ids)
        if cid not in results
    ]
    for clip_id, frames, info in run_clip_jobs(
        jobs,
        _clip_job,
        workers=workers,
        total=num_clips,
        initializer=_worker_init,
        progress=progress,
    ):
        results[clip_id] = (frames, info)
    is_test = held_out_split(ids, seed, test_fraction)
    entries = [
        ClipEntry(cid, results[cid][0], "test" if t else "train", results[cid][1])
        for cid, t in zip(ids, is_test)
    ]
    manifest = Manifest(
        resolution=resolution,
        audio_feature=AUDIO_FEATURE,
        audio_dim=80,
        clips=entries,
        generator={k: v for k, v in generator.items()},
    )
    write_manifest(out_dir, manifest)
    return manifest
