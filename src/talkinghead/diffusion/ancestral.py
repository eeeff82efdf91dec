"""Ancestral sampling with a learned-range variance (improved DDPM, Nichol & Dhariwal 2021, eq. 15).

A function over a denoiser callable, as the other samplers: ``denoise_fn(x_t, t) -> eps ‖ v`` where
``t: (B,)`` int64 is the *original* timestep and the output has twice the channels of ``x_t``. The
coefficients come from a ``respacing.LearnedRangeSchedule`` indexed by k (0 ↔ the last step).

One step, in the official order of operations (diffusedheads_spec.md §1.4; evaluated exactly like this
because at t = 999 the x0 coefficients are ~2.4e4 and any regrouping changes values that are not clamped)::

    ν = (v + 1)/2;  log σ² = ν·log β_k + (1 − ν)·log β̃_clipped,k   (ν is not clamped)
    x̂0 = clamp(coef1_x0,k · x_t − coef2_x0,k · eps, −1, 1)
    μ = coef1_q,k · x̂0 + coef2_q,k · x_t
    x_{t−1} = μ + z · exp(½ log σ²),  z ~ N(0, I), z = 0 when the original t is 0

Random draws come from ``noise(shape)``, called once per step with t > 0, in step order, so a caller can
replay recorded draws or reproduce another implementation's RNG order.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

from talkinghead.diffusion.respacing import LearnedRangeSchedule

DenoiseFn = Callable[[Tensor, Tensor], Tensor]
NoiseFn = Callable[[torch.Size], Tensor]
StepCallback = Callable[[int, int], None]  # (steps done, total steps)


def learned_range_step(
    x_t: Tensor, model_out: Tensor, k: int, schedule: LearnedRangeSchedule, noise: Tensor | None
) -> tuple[Tensor, Tensor]:
    """One reverse step from index k.

    Args:
        x_t: (B, C, ...) current state.
        model_out: (B, 2C, ...) eps ‖ v.
        k: index into the schedule arrays.
        schedule: coefficients on ``x_t``'s device.
        noise: (B, C, ...) standard normal draw, or None for the last step (no noise).
    Returns:
        (x_next, x0_pred), both (B, C, ...).
    """
    eps, v = model_out.chunk(2, dim=1)
    nu = (v + 1) / 2
    log_var = nu * schedule.log_beta[k] + (1 - nu) * schedule.log_beta_tilde_clipped[k]
    x0 = (schedule.coef1_x0[k] * x_t - schedule.coef2_x0[k] * eps).clamp(-1, 1)
    mean = schedule.coef1_q[k] * x0 + schedule.coef2_q[k] * x_t
    # official: mean + 0·exp(½ log σ²) at the last step: the same value, unless exp overflows (then NaN)
    if noise is None:
        return mean, x0
    return mean + noise * torch.exp(log_var / 2), x0


def ancestral_sample(
    denoise_fn: DenoiseFn,
    x_T: Tensor,
    schedule: LearnedRangeSchedule,
    noise: NoiseFn,
    *,
    callback: StepCallback | None = None,
) -> Tensor:
    """Run every step of ``schedule`` from ``x_T`` (B, C, ...) and return x_0 (B, C, ...).

    ``schedule`` must be on ``x_T``'s device. ``noise(shape)`` supplies z for each step with original t > 0.
    """
    x = x_T
    total = len(schedule)
    steps = schedule.timesteps.tolist()
    for done, k in enumerate(reversed(range(total))):
        t = torch.full((x.shape[0],), steps[k], dtype=torch.int64, device=x.device)
        out = denoise_fn(x, t)
        z = noise(x.shape) if steps[k] > 0 else None
        x, _ = learned_range_step(x, out, k, schedule, z)
        if callback is not None:
            callback(done + 1, total)
    return x
