"""The Diffused Heads frame loop: one full reverse diffusion per frame, autoregressive over motion frames.

Official behaviour (diffusedheads_spec.md §1.3, MANIFEST quirks 4-6), reproduced here:

* the motion buffer starts as ``n_motion_frames`` copies of the identity frame; after each frame the
  oldest is dropped and the new frame appended (oldest first);
* frame i sees the audio embeddings i−n … i+n, **clamped at both ends** (the official initial window
  ``[0, 0, 0, 1, 2]`` is the clamped one for F ≥ 3; for F ≤ 2 the official code raises IndexError, we
  clamp instead);
* random draws: x_T of every frame first (one ``randn(B, F, 3, S, S)``), then one z per step with
  t > 0, frame after frame (``OfficialNoise`` reproduces that order from a seed without holding all
  x_T in memory).

Several clips run side by side as one batch (``x_cond`` (B, 3, S, S), ``audio_emb`` (B, F, C) and a
``BatchNoise`` of one ``OfficialNoise`` per clip): clip b gets the frames it gets alone, to float32
rounding (the network's kernels may block a batch differently), and every network call serves B clips.

The network runs through ``fast_unet.FastUNet`` (per-frame and per-timestep work done once, Winograd
convolutions, fused attention), equal to ``DiffusedHeadsUNet.forward`` to rounding;
``official_order=True`` calls ``forward`` itself, the official op order.

``stabilize_every`` (train-branch ``custom_video.py``, ``stabilize``/``segment_len``) replaces the
oldest motion frame by the identity frame before every N-th frame, against drift on long clips.

Per frame, a ``FrameSampler``: the official respaced ancestral sampler, or one of two deterministic
fewer-step samplers over the same network and kept timesteps (not official): DDIM (eta = 0) and
DPM-Solver++(2M). DDIM with eta = 1 on the respaced ᾱ is the ancestral sampler at the lower end of
the learned variance (v = −1); DPM-Solver++ with 2 steps is DDIM (tests/diffused_heads/test_samplers.py).
"""

from __future__ import annotations

import functools
import itertools
from collections.abc import Callable, Iterator

import torch
from torch import Tensor

from talkinghead.diffused_heads.configs import DiffusedHeadsDiffusionConfig
from talkinghead.diffused_heads.fast_unet import FastUNet
from talkinghead.diffused_heads.unet import DiffusedHeadsUNet
from talkinghead.diffusion.ancestral import ancestral_sample
from talkinghead.diffusion.ddim_eps import ddim_eps_sample
from talkinghead.diffusion.prediction import eps_denoiser
from talkinghead.diffusion.respacing import (
    LearnedRangeSchedule,
    respaced_schedule,
    space_timesteps,
    training_schedule,
)
from talkinghead.diffusion.samplers import dpmpp_2m_sample

FrameCallback = Callable[[int, int, int], None]  # (frame index, steps done, steps per frame)
# (denoise_fn, x_T, step noise, step callback) -> the clean frame
FrameSampler = Callable[
    [
        Callable[[Tensor, Tensor], Tensor],
        Tensor,
        Callable[[torch.Size], Tensor],
        Callable[[int, int], None] | None,
    ],
    Tensor,
]


def ancestral_sampler(schedule: LearnedRangeSchedule) -> FrameSampler:
    """The official respaced ancestral sampler (learned-range variance) over ``schedule``."""

    def sample(denoise, x_T, noise, report):
        return ancestral_sample(denoise, x_T, schedule, noise, callback=report)

    return sample


def ddim_sampler(timesteps: list[int], alphas_cumprod: Tensor) -> FrameSampler:
    """Deterministic DDIM over the same network and ``timesteps`` (fewer steps; not official)."""

    def sample(denoise, x_T, noise, report):
        return ddim_eps_sample(denoise, x_T, timesteps, alphas_cumprod, callback=report)

    return sample


def dpmpp_sampler(timesteps: list[int], alphas_cumprod: Tensor) -> FrameSampler:
    """DPM-Solver++(2M) over the same network and ``timesteps`` (deterministic; not official).

    One network call per kept timestep, as the other samplers: second-order steps between them and
    a last call at t = 0 whose clamped x0 prediction is the frame.
    """
    pairs = [*itertools.pairwise(reversed(timesteps)), (timesteps[0], -1)]

    def sample(denoise, x_T, noise, report):
        channels = x_T.shape[1]
        return dpmpp_2m_sample(
            lambda x, t: denoise(x, t)[:, :channels],  # eps; the variance channels are unused
            x_T,
            pairs,
            alphas_cumprod,
            threshold_quantile=None,  # x0 clamped to [-1, 1] as the official sampler
            callback=None if report is None else lambda step: report(step.index + 1, len(pairs)),
        )

    return sample


def frame_sampler(
    name: str,
    num_steps: int,
    diffusion: DiffusedHeadsDiffusionConfig,
    device: torch.device | str = "cpu",
) -> FrameSampler:
    """The sampler called ``name`` (``options.SAMPLERS``) with ``num_steps`` network calls per frame,
    its coefficients on ``device``; a v-predicting model's output is turned into eps for it."""
    num_train = diffusion.num_train_timesteps
    builders = {"ddim": ddim_sampler, "dpmpp-2m": dpmpp_sampler}
    if name != "ancestral" and name not in builders:
        raise ValueError(f"sampler={name!r} must be one of ancestral, {', '.join(builders)}")
    alpha_bar = training_schedule(num_train, diffusion.max_beta).alpha_bar
    if name == "ancestral":
        sampler = ancestral_sampler(
            respaced_schedule(num_steps, num_train, diffusion.max_beta).to(device)
        )
    else:
        sampler = builders[name](space_timesteps(num_train, num_steps), alpha_bar.double())
    if diffusion.prediction == "eps":
        return sampler
    alpha_bar = alpha_bar.to(device)

    def sample(denoise, x_T, noise, report):
        return sampler(eps_denoiser(denoise, alpha_bar), x_T, noise, report)

    return sample


def audio_window(frame: int, num_frames: int, half: int) -> list[int]:
    """Indices frame−half … frame+half clamped to [0, num_frames − 1]."""
    return [min(max(i, 0), num_frames - 1) for i in range(frame - half, frame + half + 1)]


class OfficialNoise:
    """The official draw order from one CPU ``torch.Generator`` seed, lazily per frame.

    ``torch.randn`` on CPU fills consecutive blocks identically whether drawn at once or in frame-sized
    pieces (a frame is a multiple of 16 values), so frame f's x_T is the f-th slice of the official
    ``randn(1, F, 3, S, S)``; the step noise continues from the generator state after all F frames.

    Args:
        seed: the seed of ``torch.manual_seed`` in the official run.
        num_frames: F.
        frame_shape: (B, 3, S, S) of one frame (B = 1 reproduces the official order exactly).
        generator: a CPU generator to continue from instead of ``seed`` (x_T draws advance it).
    """

    def __init__(
        self,
        seed: int,
        num_frames: int,
        frame_shape: tuple[int, ...],
        generator: torch.Generator | None = None,
    ) -> None:
        self.frame_shape = torch.Size(frame_shape)
        if self.frame_shape[0] != 1:
            raise ValueError("OfficialNoise reproduces the official order for one clip (B = 1)")
        self._x = generator if generator is not None else torch.Generator().manual_seed(seed)
        self._z = torch.Generator()
        self._z.set_state(self._x.get_state())
        for _ in range(num_frames):  # advance past all x_T draws without keeping them
            torch.randn(self.frame_shape, generator=self._z)

    def initial(self, frame: int) -> Tensor:
        """x_T of the next frame (call in frame order)."""
        return torch.randn(self.frame_shape, generator=self._x)

    def step(self, shape: torch.Size) -> Tensor:
        """z of the next step."""
        return torch.randn(shape, generator=self._z)


class BatchNoise:
    """The draws of several clips side by side: clip b's rows are exactly what ``noises[b]`` draws alone.

    Args:
        noises: one ``OfficialNoise`` (B = 1) per clip, in batch order.
    """

    def __init__(self, noises: list[OfficialNoise]) -> None:
        if not noises:
            raise ValueError("BatchNoise needs at least one clip's OfficialNoise")
        self.noises = noises

    def initial(self, frame: int) -> Tensor:
        """(B, 3, S, S): every clip's x_T of the next frame."""
        return torch.cat([n.initial(frame) for n in self.noises])

    def step(self, shape: torch.Size) -> Tensor:
        """(B, ...) = ``shape``: every clip's z of the next step."""
        one = torch.Size((1, *shape[1:]))
        return torch.cat([n.step(one) for n in self.noises])


def _frame_denoiser(
    unet: DiffusedHeadsUNet, fast: FastUNet | None, x_cond: Tensor, motion: Tensor, window: Tensor
) -> Callable[[Tensor, Tensor], Tensor]:
    """The network over one frame's conditions as ``denoise(x_t, t)``."""
    if fast is None:
        return lambda x, t: unet(x, t, x_cond, motion, window)
    return functools.partial(fast, cond=fast.condition(x_cond, motion, window))


@torch.no_grad()
def generate_frames(
    unet: DiffusedHeadsUNet,
    x_cond: Tensor,
    audio_emb: Tensor,
    sampler: FrameSampler,
    noise: OfficialNoise | BatchNoise,
    *,
    stabilize_every: int = 0,
    callback: FrameCallback | None = None,
    official_order: bool = False,
) -> Iterator[Tensor]:
    """Yield the frames of B clips one by one, each (B, 3, S, S) in [-1, 1].

    Args:
        unet: the denoiser.
        x_cond: (B, 3, S, S) identity frame of every clip, in [-1, 1].
        audio_emb: (B, F, C) one audio embedding per frame (all clips F frames).
        sampler: how one frame is denoised (``ancestral_sampler``, ``ddim_sampler`` or
            ``dpmpp_sampler``), its coefficients on ``x_cond``'s device.
        noise: where x_T and the step draws come from (``OfficialNoise`` for B = 1, ``BatchNoise``).
        stabilize_every: N > 0 re-anchors the oldest motion frame on the identity frame before frame
            N, 2N, ... (0: off, the released sampler).
        callback: called after every step with (frame index, steps done, steps per frame).
        official_order: call ``unet.forward`` (the official op order) instead of the fast path.
    """
    if x_cond.shape[0] != audio_emb.shape[0]:
        raise ValueError(
            f"{x_cond.shape[0]} identity frames for {audio_emb.shape[0]} audio clips: give one per clip"
        )
    fast = None if official_order else FastUNet.of(unet)
    cfg = unet.cfg
    num_frames = audio_emb.shape[1]
    dev, dtype = x_cond.device, x_cond.dtype
    motion = torch.cat([x_cond] * cfg.n_motion_frames, dim=1)
    c = cfg.motion_channels
    for f in range(num_frames):
        if stabilize_every > 0 and f > 0 and f % stabilize_every == 0:
            motion = torch.cat([x_cond, motion[:, c:]], dim=1)
        window = audio_emb[:, audio_window(f, num_frames, cfg.n_audio_motion_embs)]
        denoise = _frame_denoiser(unet, fast, x_cond, motion, window)

        def step_noise(shape: torch.Size) -> Tensor:
            return noise.step(shape).to(device=dev, dtype=dtype)

        report = None if callback is None else (lambda done, total, f=f: callback(f, done, total))
        x_T = noise.initial(f).to(device=dev, dtype=dtype)
        frame = sampler(denoise, x_T, step_noise, report)
        yield frame
        motion = torch.cat([motion[:, c:], frame], dim=1) if cfg.n_motion_frames else motion
