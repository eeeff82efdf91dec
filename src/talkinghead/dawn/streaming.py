"""Streaming DAWN: frames by overlapping windows of the latent clip, at memory flat in clip length.

The clip is generated window by window (``StreamOptions``): window ``i`` covers frames ``[s, e)``
of which ``[s, k)`` (the overlap) were already produced by earlier windows and ``[k, e)`` are new.
Every window has ``window_frames`` frames (the last one is shifted back, so its overlap can be
longer); the first has no overlap.

* **Audio**: per window, the features of frames ``[s - lookahead, e + lookahead)`` are computed
  from that stretch of speech alone (``DawnPipeline.audio_condition``), so a window waits only for
  ``lookahead`` frames of audio past its end; speech may arrive in chunks (``AudioBuffer``).
* **Motion** (PBNet): run on the same stretch, windows with overlap (not PBNet's own 200-frame
  eval window): each frame's latent ``z`` is drawn once and reused by every window holding it, the
  overlap frames keep the motion they had, and the first new frames are cross-faded from the
  previous window's look-ahead prediction to the new one (no jump at ``k``).
* **Latents** (A2V-FDM): each window is sampled with the pipeline's own sampler; before every
  denoiser call the overlap frames are replaced by the previous windows' final latents re-noised to
  the current step's level (``ᾱ_t``, or ``ᾱ_{t-1}`` for the faithful DDIM update) with fresh draws
  from the same generator (RePaint-style replacement), so the new frames continue them.

Random draws come from one generator in a fixed order (per window: pose z, blink z of the new
frames, then the sampler's draws interleaved with the re-noising draws), so a seed reproduces the
stream; when one window covers the clip, the draws, shapes and audio are those of
``DawnPipeline.__call__`` and the output is identical. Memory held: one window of latents and
features, ``window_frames`` frames of history, the audio of one window.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch
from torch import Tensor

from talkinghead.dawn.configs import GenerateOptions, StreamOptions
from talkinghead.dawn.motion import MOTION_DTYPE, Motion, generate_motion
from talkinghead.dawn.portrait import Portrait
from talkinghead.diffusion.samplers import seeded_randn
from talkinghead.diffusion.schedules import alphas_cumprod_prev, cosine_alphas_cumprod
from talkinghead.media.audio import HUBERT_SAMPLE_RATE, num_video_frames
from talkinghead.media.audio_stream import AudioBuffer, AudioSource
from talkinghead.pipelines.base import ProgressCallback

if TYPE_CHECKING:
    from talkinghead.dawn.pipeline import DawnPipeline

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Window:
    """Frames ``[start, end)`` of one window; ``[start, new)`` are the overlap (already final)."""

    start: int
    new: int
    end: int


@dataclass(frozen=True)
class LatentChunk:
    """New latents of one window: frames ``[window.new, window.end)``, (1, 3, n, h, w)."""

    window: Window
    latents: Tensor


class _History:
    """The last ``keep`` rows of a per-frame array (frames ``[offset, offset + len)``)."""

    def __init__(self, keep: int) -> None:
        self.keep, self.offset, self.rows = keep, 0, None

    def rows_from(self, start: int):
        assert start >= self.offset, (start, self.offset)  # the plan never reaches back further
        return None if self.rows is None else self.rows[start - self.offset :]

    def append(self, rows) -> None:
        joined = rows if self.rows is None else _cat(self.rows, rows)
        cut = max(0, len(joined) - self.keep)
        self.rows, self.offset = joined[cut:], self.offset + cut


def _cat(a, b):
    return torch.cat([a, b]) if isinstance(a, Tensor) else np.concatenate([a, b])


class _MotionWindows:
    """PBNet by windows: per-frame latents drawn once, overlap kept, seams cross-faded."""

    def __init__(
        self,
        pipe: DawnPipeline,
        portrait: Portrait,
        options: GenerateOptions,
        keep: int,
        generator: torch.Generator,
    ) -> None:
        self.pipe, self.portrait, self.options, self.generator = pipe, portrait, options, generator
        self.z = _History(keep)  # (F, 2, latent): pose and blink z per frame
        self.deltas = _History(keep)  # (F, 8): pose delta, eye delta
        self.tail = np.zeros((0, 8), np.float32)  # look-ahead prediction of frames [k, ...)

    def __call__(self, feats: Tensor, seg_start: int, win: Window) -> np.ndarray:
        """feats: (T, A) float32 of frames ``[seg_start, seg_start + T)`` -> (e - s, 8) deltas."""
        seg_end = seg_start + feats.shape[0]
        drawn = self.z.offset + (0 if self.z.rows is None else len(self.z.rows))
        if seg_end > drawn:
            modules = self.pipe.modules
            shape = (seg_end - drawn, 1)
            pose_z = seeded_randn(
                (*shape, modules.pose.cfg.latent_dim), self.generator, feats.device, MOTION_DTYPE
            )
            blink_z = seeded_randn(
                (*shape, modules.blink.cfg.latent_dim), self.generator, feats.device, MOTION_DTYPE
            )
            self.z.append(torch.cat([pose_z, blink_z], dim=1))
        z = self.z.rows_from(seg_start)[: seg_end - seg_start]
        face, scale = self.portrait.face, self.options.motion_scale
        motion = generate_motion(
            self.pipe.modules.pose,
            self.pipe.modules.blink,
            feats,
            face.pose,
            face.eye,
            motion_scale=scale,
            blink=self.options.blink,
            z=(z[:, :1].contiguous(), z[:, 1:].contiguous()),
        )
        rows = np.concatenate([motion.pose_delta, motion.eye_delta], axis=1)
        new = rows[win.new - seg_start : win.end - seg_start].copy()
        fade = min(len(self.tail), len(new))
        if fade:
            w = (np.arange(fade, 0, -1, dtype=np.float32) / (fade + 1))[:, None]
            new[:fade] = w * self.tail[:fade] + (1 - w) * new[:fade]
        self.tail = rows[win.end - seg_start :]
        old = self.deltas.rows_from(win.start)
        out = new if old is None else np.concatenate([old[: win.new - win.start], new])
        self.deltas.append(new)
        return out


def plan_next(known: int, total: int | None, opts: StreamOptions) -> Window | None:
    """The window after ``known`` final frames of a clip of ``total`` frames (None: not known
    yet); None when the clip is complete."""
    end = known + (opts.window_frames if known == 0 else opts.window_frames - opts.overlap)
    if total is not None:
        end = min(end, total)
    if end <= known:
        return None
    return Window(max(0, end - opts.window_frames), known, end)


def _noise_levels(pipe: DawnPipeline, options: GenerateOptions) -> Tensor:
    """(T,) float64: ᾱ of the state the sampler feeds the denoiser at time t."""
    diffusion = pipe.config.diffusion
    ab = cosine_alphas_cumprod(diffusion.num_train_timesteps, diffusion.cosine_s, torch.float64)
    faithful_ddim = options.faithful and options.sampler == "ddim"
    return alphas_cumprod_prev(ab) if faithful_ddim else ab


@torch.no_grad()
def stream_latents(
    pipe: DawnPipeline,
    portrait: Portrait,
    audio: AudioSource,
    options: GenerateOptions,
    stream: StreamOptions,
    generator: torch.Generator,
    callback: ProgressCallback | None = None,
) -> Iterator[LatentChunk]:
    """The clip's final latents, window by window (memory flat in clip length)."""
    buffer = AudioBuffer(audio)
    per_frame = HUBERT_SAMPLE_RATE / options.fps
    la, total, known = stream.lookahead, None, 0
    levels = _noise_levels(pipe, options)
    motion = _MotionWindows(pipe, portrait, options, stream.window_frames + 2 * la, generator)
    history = _History(stream.window_frames)  # final latents, frames on dim 0: (n, 3, h, w)
    while True:
        ahead = plan_next(known, total, stream)
        if ahead is None:
            break
        buffer.fill(int(np.ceil((ahead.end + la) * per_frame)))
        if buffer.ended:
            total = num_video_frames(buffer.received, fps=options.fps)
            if total < 1:
                raise ValueError("the speech is shorter than one video frame; pass longer audio")
        win = plan_next(known, total, stream)
        if win is None:
            break
        seg_start = max(0, win.start - la)
        seg_end = total if total is not None and win.end + la >= total else win.end + la
        last = buffer.received if seg_end == total else int(seg_end * per_frame)
        samples = buffer.read(int(seg_start * per_frame), last)
        with torch.autocast(pipe.device.type, enabled=False):
            feats = pipe.audio_condition(samples, seg_end - seg_start, dtype=MOTION_DTYPE)
        deltas = motion(feats, seg_start, win)
        window_motion = Motion(deltas[:, :6], deltas[:, 6:], deltas[:, :6], deltas[:, 6:])
        cond_audio = feats[win.start - seg_start : win.end - seg_start].to(pipe.dtype)
        known_latents = history.rows_from(win.start)
        constrain = None
        if known_latents is not None and win.new > win.start:
            clean = known_latents[: win.new - win.start].permute(1, 0, 2, 3)[None]
            constrain = _renoiser(clean, levels, generator)
        report = _window_progress(callback, known, total or 0)
        x = pipe.sample_latents(
            portrait, cond_audio, window_motion, options, generator, report, constrain=constrain
        )
        new = x[:, :, win.new - win.start :]
        history.append(new[0].permute(1, 0, 2, 3))
        buffer.drop_before(int(max(0, win.end - stream.window_frames - la) * per_frame))
        known = win.end
        yield LatentChunk(win, new)
    if callback is not None:
        callback("stream", known, known)


def _window_progress(callback: ProgressCallback | None, done: int, total: int) -> ProgressCallback:
    """The sampler's per-step callback, reported as ("stream", frames done, total or 0): one bar,
    and a raising callback still stops the stream at the next step."""

    def report(stage: str, step: int, steps: int) -> None:
        if callback is not None:
            callback("stream", done, total)

    return report


def _renoiser(clean: Tensor, levels: Tensor, generator: torch.Generator):
    """``(x, t) -> x`` with its first frames set to ``clean`` (1, 3, k, h, w) noised to ᾱ_t."""
    k = clean.shape[2]

    def constrain(x: Tensor, t: int) -> Tensor:
        a = float(levels[t])
        noise = seeded_randn(clean.shape, generator, x.device, x.dtype)
        x = x.clone()
        x[:, :, :k] = clean.to(x.dtype) * a**0.5 + noise * (1 - a) ** 0.5
        return x

    return constrain


class DawnStreaming:
    """``DawnPipeline.stream``: the pipeline's streaming entry, mixed into ``DawnPipeline``."""

    def stream(
        self: DawnPipeline,
        source: Portrait | str | Path | np.ndarray,
        audio: AudioSource,
        options: GenerateOptions | None = None,
        *,
        window_frames: int = StreamOptions.window_frames,
        overlap: int = StreamOptions.overlap,
        lookahead: int = StreamOptions.lookahead,
        generator: torch.Generator | None = None,
        callback: ProgressCallback | None = None,
    ) -> Iterator[np.ndarray]:
        """(n, S, S, 3) uint8 batches (or pasted back into the original) as each window is ready,
        at memory flat in clip length; ``audio`` may also be an iterator of (n,) float32 16 kHz
        chunks (speech arriving live)."""
        stream = StreamOptions(window_frames, overlap, lookahead)
        options, generator = self.seeded(options, generator)
        logger.info("streaming with seed %d", options.seed)
        portrait = source if isinstance(source, Portrait) else self.prepare(source, options)
        for chunk in stream_latents(self, portrait, audio, options, stream, generator, callback):
            yield from self.render(portrait, chunk.latents, options)


def seam_ratio(latents: np.ndarray | Tensor, boundaries: list[int]) -> float:
    """Frame-to-frame change at window boundaries over its median elsewhere.

    Args:
        latents: (F, ...) per-frame latents (or frames).
        boundaries: first new frame of each window after the first.
    Returns:
        mean change into a boundary frame / median change elsewhere (1 = no visible seam).
    """
    x = torch.as_tensor(np.asarray(latents), dtype=torch.float64)
    change = (x[1:] - x[:-1]).abs().flatten(1).mean(1).numpy()  # change[j - 1]: j-1 -> j
    at = [b - 1 for b in boundaries if 0 < b < len(x)]
    if not at:
        raise ValueError("no window boundary inside the clip")
    rest = np.delete(change, at)
    return float(np.mean(change[at]) / np.median(rest))
