"""Synthetic benchmark (``talkinghead eval-synth``): does a trained model move lips, eyes and pixels
like the ground truth of held-out ``talkinghead data synth`` clips?

Per held-out clip (split ``test``):

* **LFG PSNR**: the flow autoencoder (LFG, paper Sec. 3.1) reconstructs every frame from the clip's
  first frame (``FlowAutoencoder.forward(source, driving)["prediction"]``); PSNR in [0, 255].
  With ``source="open"`` the source frame (here and below) is instead the eyes-open frame nearest
  a half-open mouth (``data.mouth_reference.reference_index``), as the demo portrait is chosen.
* **Mouth correlation**: a video is generated from the first frame and the clip's speech with the
  ground-truth pose and eyes as drivers (so only the lips are left to the audio); its mouth opening,
  measured in the image, is correlated (Pearson) with the true ``mouth_open``. The same measure on
  the real frames gives the measure's own ceiling (``mouth_corr_real``), and on the LFG's
  reconstructions the ceiling of anything rendered through the autoencoder (``mouth_corr_lfg``).
* **Blink rate**: blinks per second counted (``eval.metrics.count_blinks``) on an eye-band signal of
  the generated video vs the true rate from ``blink.npy``; with ``pbnet=True`` also a video whose
  pose and blinks PBNet generates (paper Sec. 3.3).

Families that re-voice a person's video (``families.Family.takes_video``: DiffTalk) get the clip's
own video with its own speech instead: the head, eyes and upper face are the clip's, the lower face
is generated from the audio (and the kept pixels), so ``mouth_corr_gt`` is again the generated
mouth against the truth, next to ``mouth_corr_real``. The frames are passed as the face crops they
are (``crop=False``); there is no LFG and no blink to score.

Portrait families that take no drivers (``Family.takes_drivers`` False: Diffused Heads) generate
from the clip's first frame and its speech alone, with the family's own sampler (or
``SynthBenchOptions.sampler``): ``mouth_corr_gt`` and ``blink_rate_gt`` score that video. So
``*_gt`` is always the video generated with every ground truth the family takes.

Image measures (the synthetic faces have known colours, ``data/synth_face.py``; the person's own
lip, skin and hair colours follow from the clip's seed, ``data.synth.clip_style``): each pixel is
softly assigned to the nearest colour the renderer paints there. Mouth opening = the inner-mouth and
teeth share of a fixed-size window around the ground-truth mouth box centre, over the squared
mouth width; eye openness = the sclera share of the eye band of the face box. Goals of the shipped demo model: mouth correlation >= 0.6
and LFG PSNR >= 28 dB.
"""

from __future__ import annotations

import dataclasses
import logging
import os
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import cv2
import numpy as np
import torch
from torch import Tensor

from talkinghead.data.synth.style import FaceStyle
from talkinghead.eval.metrics import count_blinks, psnr
from talkinghead.eval.options import SynthBenchOptions

if TYPE_CHECKING:
    from talkinghead.face.analysis import FaceState

__all__ = [
    "SynthBenchOptions",
    "blink_onsets",
    "eye_signal",
    "format_table",
    "ground_truth_face",
    "lfg_psnr",
    "lfg_reconstruction",
    "lfg_scores",
    "mouth_opening",
    "pearson",
    "run_synth_benchmark",
    "summarize",
    "video_scores",
]

logger = logging.getLogger(__name__)

_INNER_MOUTH = (60.0, 15.0, 20.0)  # RGB the renderer paints (data/synth_face.py)
_TEETH = (235.0, 232.0, 220.0)
_SCLERA = (240.0, 238.0, 232.0)
_DARK = ((15.0, 12.0, 12.0), (35.0, 25.0, 25.0))  # pupil, lashes
_TAU = 25.0  # colour distance scale of the soft assignment
# A blink is a dip below half the median eye share: at 64 px the share of an open eye wanders by
# up to 40% with pose and hair, and a shallower threshold counts those as blinks.
_BLINK_DROP = 0.5
GOALS = {"mouth_corr": 0.6, "lfg_psnr": 28.0}


def _share(
    pixels: np.ndarray, targets: Sequence[Sequence[float]], others: np.ndarray
) -> np.ndarray:
    """Soft share of each pixel ``(..., 3)`` that belongs to ``targets`` rather than ``others``:
    a softmax over all colours of ``-(distance / _TAU)^2``, summed over the targets -> ``(...)``."""
    colours = np.concatenate([np.asarray(targets, np.float64), np.asarray(others, np.float64)])
    d2 = ((pixels[..., None, :] - colours) ** 2).sum(-1) / _TAU**2  # -> (..., K)
    w = np.exp(-(d2 - d2.min(-1, keepdims=True)))
    return w[..., : len(targets)].sum(-1) / w.sum(-1)


def _skin_tones(style: FaceStyle) -> np.ndarray:
    """(4, 3) the skin as shaded and darkened across the face (rim, crease, nose, nostril)."""
    return np.asarray(style.skin, np.float64)[None] * np.array([[1.0], [0.8], [0.6], [0.35]])


def mouth_opening(frames: np.ndarray, mouth_box: np.ndarray, style: FaceStyle) -> np.ndarray:
    """Image-based mouth opening per frame.

    Each pixel of a window around the mouth is softly assigned to the nearest of the colours the
    renderer paints there (inner mouth, teeth, the person's lips and skin tones); the opening is
    the inner-mouth and teeth share summed over the window, over the squared mouth width.

    Args:
        frames: (F, S, S, 3) uint8 RGB.
        mouth_box: (F, 4) ground-truth [x0, y0, x1, y1] in the frames' pixels (only its centre and
            the clip's median size place the window, so the opening itself is not read from it).
        style: the clip's person (``data.synth.clip_style``): its lip and skin colours.

    Returns:
        (F,) float, 0 for a closed mouth, growing with the visible inner mouth and teeth.
    """
    size = frames.shape[1]
    w = float(np.median(mouth_box[:, 2] - mouth_box[:, 0]))
    h = float(np.median(mouth_box[:, 3] - mouth_box[:, 1]))
    if w <= 0:
        raise ValueError("mouth_box has no width")
    lips = np.asarray(style.lips, np.float64)
    others = np.concatenate([lips[None], lips[None] * 0.45, _skin_tones(style)])
    out = np.empty(len(frames))
    for i, (frame, box) in enumerate(zip(frames, mouth_box)):
        cx, cy = (box[0] + box[2]) / 2, (box[1] + box[3]) / 2
        x0, x1 = int(max(cx - 0.6 * w, 0)), int(min(cx + 0.6 * w + 1, size))
        y0, y1 = int(max(cy - h, 0)), int(min(cy + h + 1, size))
        patch = frame[y0:y1, x0:x1].astype(np.float64)
        out[i] = _share(patch, (_INNER_MOUTH, _TEETH), others).sum() / w**2
    return out


def eye_signal(frames: np.ndarray, bbox: np.ndarray, style: FaceStyle) -> np.ndarray:
    """(F,) eye share of the eye band of the face box, over its median (~1 open, ~0 closed): pixels
    are softly assigned among sclera, iris and pupil (the open eye) and lashes, brows, hair and skin
    tones (lids and the rest). At 64 px it is rough: on real frames of held-out clips it finds
    about 4 in 5 blinks, and it misses them on dark skin, whose shade is near the pupil's."""
    size = frames.shape[1]
    hair = np.asarray(style.hair, np.float64)
    eye = (_SCLERA, style.iris, _DARK[0])
    others = np.concatenate([[_DARK[1], hair, hair * 0.8 + 10], _skin_tones(style)])
    values = np.empty(len(frames))
    for i, (frame, b) in enumerate(zip(frames, bbox)):
        fw, fh = b[1] - b[0], b[3] - b[2]
        y0, y1 = int(max(b[2] + 0.3 * fh, 0)), int(min(b[2] + 0.55 * fh + 1, size))
        x0, x1 = int(max(b[0] + 0.1 * fw, 0)), int(min(b[1] - 0.1 * fw + 1, size))
        values[i] = _share(frame[y0:y1, x0:x1].astype(np.float64), eye, others).sum()
    med = np.median(values)
    return values / med if med > 0 else np.ones_like(values)


def blink_onsets(blink: np.ndarray) -> int:
    """Number of closed-eye runs in a (F,) 0/1 ground-truth blink track."""
    b = np.asarray(blink).astype(bool)
    return int(b[0]) + int(np.sum(b[1:] & ~b[:-1])) if b.size else 0


def pearson(a: np.ndarray, b: np.ndarray) -> float:
    """Pearson correlation; NaN when either signal is constant."""
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    if a.std() == 0 or b.std() == 0:
        return float("nan")
    return float(np.corrcoef(a, b)[0, 1])


def _to_tensor(frames: np.ndarray, size: int, device: torch.device, dtype: torch.dtype) -> Tensor:
    """(F, H, W, 3) uint8 -> (F, 3, size, size) in [0, 1]."""
    if frames.shape[1] != size:
        frames = np.stack(
            [cv2.resize(f, (size, size), interpolation=cv2.INTER_AREA) for f in frames]
        )
    if not frames.flags.writeable:  # read-only clip arrays: torch.from_numpy warns on those
        frames = frames.copy()
    return torch.from_numpy(frames).permute(0, 3, 1, 2).to(device=device, dtype=dtype) / 255.0


@torch.no_grad()
def lfg_reconstruction(
    flow_ae: torch.nn.Module,
    frames: np.ndarray,
    size: int,
    batch_size: int = 16,
    source_index: int = 0,
) -> tuple[Tensor, Tensor]:
    """The LFG reconstructing (F, H, W, 3) uint8 ``frames`` from frame ``source_index`` at the
    model's resolution ``size``: (reconstructions, targets), both (F, 3, size, size) in [0, 1]."""
    param = next(flow_ae.parameters())
    video = _to_tensor(frames, size, param.device, param.dtype)
    preds = []
    for start in range(0, len(video), batch_size):
        drv = video[start : start + batch_size]
        src = video[source_index : source_index + 1].expand_as(drv)
        preds.append(flow_ae(src, drv)["prediction"].clamp(0, 1))
    return torch.cat(preds), video


def lfg_psnr(
    flow_ae: torch.nn.Module, frames: np.ndarray, size: int, batch_size: int = 16
) -> float:
    """PSNR (dB, [0, 255]) of ``lfg_reconstruction``."""
    preds, video = lfg_reconstruction(flow_ae, frames, size, batch_size)
    return psnr(preds.float() * 255.0, video.float() * 255.0)


def _resize(frames: np.ndarray, size: int) -> np.ndarray:
    """(F, s, s, 3) uint8 -> (F, size, size, 3) (bicubic; unchanged when s == size)."""
    if frames.shape[1] == size:
        return frames
    return np.stack([cv2.resize(f, (size, size), interpolation=cv2.INTER_CUBIC) for f in frames])


def _to_uint8(video: Tensor, size: int) -> np.ndarray:
    """(F, 3, s, s) in [0, 1] -> (F, size, size, 3) uint8 RGB."""
    frames = (video.float().clamp(0, 1) * 255).round().byte().permute(0, 2, 3, 1).cpu().numpy()
    return _resize(frames, size)


def ground_truth_face(reader: Any, ref: int = 0) -> FaceState:
    """The ``FaceState`` of a synthetic clip's frame ``ref`` from the renderer's ground truth (box,
    pose and eyes; no detector): ``pipe.prepare(frame, options, face=...)`` without a crop."""
    from talkinghead.face.analysis import FaceState

    h, w = np.asarray(reader.frames[ref]).shape[:2]
    x0, x1, y0, y1 = np.asarray(reader.array("bbox")[ref][:4], np.float64)
    return FaceState(
        box=np.array([x0, y0, x1, y1, 1.0]),
        pose=np.array(reader.array("pose")[ref]),
        eye=np.array(reader.array("eye")[ref]),
        bbox_crop=np.array([x0, x1, y0, y1, h, w], np.int64),
        crop_box=(0, 0, w, h),
        detector="ground truth",
    )


def _call_options(pipe: Any, options: SynthBenchOptions, seed: int) -> Any:
    """The pipeline's options for one clip: steps, seed, the sampler if chosen, no face crop (the
    synthetic frames are face crops already)."""
    knobs: dict[str, Any] = {"num_steps": options.num_steps, "seed": seed, "crop": False}
    if options.sampler is not None:
        if "sampler" not in {f.name for f in dataclasses.fields(pipe.options_class)}:
            raise ValueError(f"the {pipe.family} family has no sampler choice; drop sampler=")
        knobs["sampler"] = options.sampler
    return dataclasses.replace(pipe.options_class(), **knobs)


def _generate(
    pipe: Any, reader: Any, options: SynthBenchOptions, seed: int, pbnet: bool, ref: int = 0
) -> np.ndarray:
    """Generated (F, S, S, 3) uint8 frames for the clip's frame ``ref`` and speech (DAWN's stages).

    The portrait's face is the renderer's ground truth (no detector); the motion is PBNet's or, with
    ``pbnet=False``, the clip's true pose and eye tracks.
    """
    source = np.asarray(reader.frames[ref])
    pose, eye = np.array(reader.array("pose")), np.array(reader.array("eye"))  # writable copies
    face = ground_truth_face(reader, ref)
    gen_opts = _call_options(pipe, options, seed)
    portrait = pipe.prepare(source, gen_opts, face=face)
    feats = pipe.audio_condition(reader.audio(), reader.num_frames)
    generator = torch.Generator(device=pipe.device).manual_seed(seed)
    drivers = {} if pbnet else {"pose": pose, "blink": eye}
    motion = pipe.motion(portrait, feats, gen_opts, generator, **drivers)
    latents = pipe.sample_latents(portrait, feats, motion, gen_opts, generator)
    return np.concatenate(list(pipe.decode(portrait, latents, options.batch_size)))


def _call_pipeline(
    pipe: Any, source: np.ndarray, reader: Any, options: SynthBenchOptions, seed: int
) -> tuple[np.ndarray, Any]:
    """``pipe(source, the clip's speech)``: (F, S, S, 3) uint8 frames (F = the clip's) and the
    ``GenerationResult``."""
    result = pipe(source, reader.audio(), _call_options(pipe, options, seed))
    frames = np.concatenate(list(result.frames))
    if len(frames) < reader.num_frames:
        raise RuntimeError(f"{len(frames)} frames came back for a {reader.num_frames}-frame clip")
    return frames[: reader.num_frames], result


def lfg_scores(
    flow_ae: torch.nn.Module,
    reader: Any,
    size: int,
    *,
    source: str = "first",
    batch_size: int = 16,
) -> dict[str, Any]:
    """The LFG alone on one synthetic clip (``ClipReader``) at the model's resolution ``size``.

    Returns:
        ``source_index`` (the source frame, ``SynthBenchOptions.source``), ``lfg_psnr`` and
        ``mouth_corr_lfg``: the mouth opening of its reconstructions against the truth (what the
        diffusion model can reach at best through the autoencoder).
    """
    from talkinghead.data.mouth_reference import reference_index
    from talkinghead.data.synth.clips import info_style

    frames = np.asarray(reader.frames)
    truth_open = np.asarray(reader.array("mouth_open"))
    ref = 0
    if source == "open":
        ref = reference_index(truth_open, np.asarray(reader.array("blink")))
    recon, video = lfg_reconstruction(flow_ae, frames, size, batch_size, ref)
    rec_open = mouth_opening(
        _to_uint8(recon, frames.shape[1]),
        np.asarray(reader.array("mouth_box")),
        info_style(reader.info),
    )
    return {
        "source_index": ref,
        "lfg_psnr": psnr(recon.float() * 255.0, video.float() * 255.0),
        "mouth_corr_lfg": pearson(rec_open, truth_open),
    }


def video_scores(video: np.ndarray, reader: Any, start: int = 0) -> dict[str, float]:
    """A generated video of a synthetic clip against its truth: ``mouth_corr`` (Pearson of the
    image mouth opening with ``mouth_open``) and ``blink_rate`` (blinks per second of the eye band).

    Args:
        video: (F, S, S, 3) uint8 RGB, any side S (resized to the clip's).
        reader: the clip (``data.layout.ClipReader`` of a ``talkinghead data synth`` set).
        start: the clip frame of ``video[0]`` (to score a segment of a long clip).
    """
    from talkinghead.data.synth.clips import info_style

    style = info_style(reader.info)
    span = slice(start, start + len(video))
    frames = _resize(video, np.asarray(reader.frames[0]).shape[0])
    opening = mouth_opening(frames, np.asarray(reader.array("mouth_box")[span]), style)
    eye = eye_signal(frames, np.asarray(reader.array("bbox")[span]), style)
    return {
        "mouth_corr": pearson(opening, np.asarray(reader.array("mouth_open")[span])),
        "blink_rate": len(count_blinks(eye, _BLINK_DROP)) / (len(video) / 25.0),
    }


def _clip_scores(pipe: Any, reader: Any, options: SynthBenchOptions, seed: int) -> dict[str, Any]:
    from talkinghead.families import get_family

    frames = np.asarray(reader.frames)
    real = video_scores(frames, reader)
    row: dict[str, Any] = {"frames": reader.num_frames, "mouth_corr_real": real["mouth_corr"]}
    family = get_family(pipe.family)
    if family.takes_video:
        gen, result = _call_pipeline(pipe, np.array(frames), reader, options, seed)
        unchanged = int(getattr(result, "faceless_frames", 0))  # no face: the true mouth kept
        if unchanged:
            logger.warning(
                "%s: %d frames had no face and kept their true mouth", reader.dir, unchanged
            )
        row["mouth_corr_gt"] = video_scores(gen, reader)["mouth_corr"]
        return {**row, "unchanged_frames": unchanged}
    row["blink_rate_true"] = blink_onsets(reader.array("blink")) / (reader.num_frames / 25.0)
    row["blink_rate_real"] = real["blink_rate"]
    generated: dict[str, np.ndarray] = {}
    if family.takes_drivers:
        lfg = lfg_scores(
            pipe.modules.flow_ae,
            reader,
            pipe.modules.resolution,
            source=options.source,
            batch_size=options.batch_size,
        )
        row.update(lfg)
        for name in ("gt", "pbnet") if options.pbnet else ("gt",):
            use_pbnet = name == "pbnet"
            generated[name] = _generate(pipe, reader, options, seed, use_pbnet, lfg["source_index"])
    else:
        generated["gt"] = _call_pipeline(pipe, frames[0], reader, options, seed)[0]
    for name, video in generated.items():
        scores = video_scores(video, reader)
        row[f"mouth_corr_{name}"] = scores["mouth_corr"]
        row[f"blink_rate_{name}"] = scores["blink_rate"]
    return row


def run_synth_benchmark(
    data_dir: str | os.PathLike[str],
    pipeline: Any,
    *,
    options: SynthBenchOptions | None = None,
    split: str = "test",
    shard: tuple[int, int] = (0, 1),
) -> dict[str, Any]:
    """Score ``pipeline`` (a ``TalkingHeadPipeline``) on the held-out clips of a synthetic set.

    ``shard=(i, n)`` scores only every n-th of those clips from the i-th (clip k keeps its seed
    ``options.seed + k``), so that n processes can share the work; ``summarize`` merges their rows.

    Returns:
        ``{"clips": {id: row}, "mean": {metric: value}, "goals": GOALS, "num_clips": n}``; rows
        of a video-driven family hold ``mouth_corr_gt`` (the clip re-voiced with its own speech),
        ``mouth_corr_real`` and ``unchanged_frames`` (no face found, so not re-voiced: they
        flatter ``mouth_corr_gt``); rows of a portrait family hold ``mouth_corr_gt`` (generated
        with the truth the family takes: DAWN's pose and eyes, or the speech alone),
        ``mouth_corr_real`` (the measure's ceiling), ``blink_rate_true/real/gt`` in blinks per
        second, and for a family with drivers ``lfg_psnr``, ``mouth_corr_lfg`` (the LFG's own
        reconstructions: the ceiling through the autoencoder) and ``*_pbnet``.
    """
    from talkinghead.data.layout import CLIPS_DIR, ClipReader, read_manifest

    options = options or SynthBenchOptions()
    manifest = read_manifest(data_dir)
    entries = manifest.split(split)
    if options.max_clips is not None:
        entries = entries[: options.max_clips]
    if not entries:
        raise ValueError(f"{data_dir} has no clips in split {split!r}")
    if not 0 <= shard[0] < shard[1]:
        raise ValueError(f"shard={shard} must be (i, n) with 0 <= i < n")
    rows = {}
    for i, entry in enumerate(entries):
        if i % shard[1] != shard[0]:
            continue
        reader = ClipReader(Path(data_dir) / CLIPS_DIR / entry.id, manifest.audio_feature)
        if not (reader.dir / "mouth_open.npy").is_file() or "seed" not in reader.info:
            raise ValueError(
                f"{reader.dir} has no ground truth: not a `talkinghead data synth` set"
            )
        rows[entry.id] = _clip_scores(pipeline, reader, options, options.seed + i)
        logger.info("clip %s: %s", entry.id, rows[entry.id])
    return summarize(rows)


def summarize(rows: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """Per-clip rows -> the summary ``run_synth_benchmark`` returns (means over clips).

    Rows read back from a written summary hold null for NaN; they count as NaN again.
    """
    clips = {
        cid: {k: np.nan if v is None else v for k, v in row.items()}
        for cid, row in sorted(rows.items())
    }
    skip = ("frames", "source_index")
    keys = sorted({k for row in clips.values() for k in row if k not in skip})
    mean = {k: float(np.nanmean([row[k] for row in clips.values() if k in row])) for k in keys}
    return {"num_clips": len(clips), "mean": mean, "goals": GOALS, "clips": clips}


def format_table(summary: dict[str, Any]) -> str:
    """A plain-text table: one row per clip plus the mean, then the goals."""
    keys = list(summary["mean"])
    lines = ["clip      " + " ".join(f"{k:>18}" for k in keys)]
    for cid, row in summary["clips"].items():
        lines.append(f"{cid:<10}" + " ".join(f"{row.get(k, float('nan')):>18.3f}" for k in keys))
    lines.append("mean      " + " ".join(f"{summary['mean'][k]:>18.3f}" for k in keys))
    for metric, goal in GOALS.items():
        key = "mouth_corr_gt" if metric == "mouth_corr" else metric
        if key not in summary["mean"]:
            continue  # e.g. no LFG in a video-driven family
        value = summary["mean"][key]
        lines.append(
            f"goal {metric} >= {goal}: {value:.3f} ({'met' if value >= goal else 'not met'})"
        )
    return "\n".join(lines)
