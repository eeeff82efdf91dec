"""Improved-DDPM cosine schedule, timestep respacing and learned-range coefficients (Nichol & Dhariwal 2021).

Pure functions, written to reproduce the Diffused Heads sampler bit for bit (diffusedheads_spec.md §1.4 and
the quirks in ../shared/golden/diffusedheads/MANIFEST.md):

* ``improved_cosine_betas``: ``β_i = min(1 − ᾱ((i+1)/T)/ᾱ(i/T), max_beta)`` with
  ``ᾱ(s) = cos²((s + 0.008)/1.008 · π/2)`` in float64, stored as float32 (no normalisation by ᾱ(0)).
* ``space_timesteps``: kept steps from an accumulated float stride rounded with Python's ``round``
  (half to even): S=7 gives 0, 166, 333, 500, 666, 832, 999.
* ``respaced_betas``: ``β'_k = 1 − ᾱ[t_k]/ᾱ[t_{k−1}]`` evaluated in **float32** on the float32 cumulative
  product (the cancellation at the last kept step is part of the official numbers: ᾱ' = 1.766e-9, not
  2.429e-9, at t = 999 for S = 10); the respaced betas are not clipped.
* ``LearnedRangeSchedule``: every coefficient the ancestral sampler and the training losses read,
  computed in float32 in the official order.

Glossary: ᾱ = alpha_bar, β̃ = beta_tilde (posterior variance), ``coef*_x0`` predict x0 from (x_t, eps),
``coef*_q`` are the posterior-mean coefficients of q(x_{t−1} | x_t, x0).
"""

from __future__ import annotations

from dataclasses import dataclass, fields

import numpy as np
import torch
from torch import Tensor


def improved_cosine_betas(num_steps: int = 1000, max_beta: float = 0.999) -> Tensor:
    """(num_steps,) float32 training betas of the improved-DDPM cosine schedule (see module docstring)."""
    if num_steps < 1:
        raise ValueError(f"num_steps={num_steps} must be >= 1")

    def alpha_bar(s: float) -> float:
        return float(np.cos((s + 0.008) / 1.008 * np.pi / 2) ** 2)

    betas = [
        min(1 - alpha_bar((i + 1) / num_steps) / alpha_bar(i / num_steps), max_beta)
        for i in range(num_steps)
    ]
    return torch.tensor(betas, dtype=torch.float64).float()


def space_timesteps(num_train: int, num_steps: int) -> list[int]:
    """Kept original timesteps, increasing, from 0 to num_train − 1 (round half to even).

    Raises:
        ValueError: ``num_steps`` is not in [2, num_train].
    """
    if not 2 <= num_steps <= num_train:
        raise ValueError(f"num_steps={num_steps} must be between 2 and {num_train}")
    stride = (num_train - 1) / (num_steps - 1)
    kept, position = [], 0.0
    for _ in range(num_steps):
        kept.append(round(position))
        position += stride
    return kept


def respaced_betas(alpha_bar: Tensor, kept: list[int]) -> Tensor:
    """(S,) float32 betas that jump between the kept timesteps of a float32 ᾱ array (not clipped)."""
    last = torch.ones((), dtype=alpha_bar.dtype)
    betas = []
    for t in kept:
        betas.append(1 - alpha_bar[t] / last)
        last = alpha_bar[t]
    return torch.stack(betas)


@dataclass(frozen=True)
class LearnedRangeSchedule:
    """All (S,) float32 arrays of one (possibly respaced) schedule; index k ↔ original ``timesteps[k]``."""

    timesteps: Tensor  # (S,) int64 original timesteps the network receives
    beta: Tensor  # β_k
    log_beta: Tensor  # log β_k (upper end of the learned variance range)
    alpha: Tensor  # 1 − β_k
    alpha_bar: Tensor  # cumulative product of alpha
    alpha_bar_prev: Tensor  # ᾱ_{k−1}, 1 at k = 0
    beta_tilde: Tensor  # posterior variance β_k (1 − ᾱ_{k−1}) / (1 − ᾱ_k)
    log_beta_tilde_clipped: (
        Tensor  # log β̃ with entry 0 replaced by entry 1 (lower end of the range)
    )
    coef1_x0: Tensor  # sqrt(1/ᾱ_k)
    coef2_x0: Tensor  # sqrt(1/ᾱ_k − 1)
    coef1_q: Tensor  # β_k sqrt(ᾱ_{k−1}) / (1 − ᾱ_k)
    coef2_q: Tensor  # (1 − ᾱ_{k−1}) sqrt(α_k) / (1 − ᾱ_k)

    def __len__(self) -> int:
        return int(self.timesteps.shape[0])

    def to(self, device: torch.device | str) -> LearnedRangeSchedule:
        return LearnedRangeSchedule(
            **{f.name: getattr(self, f.name).to(device) for f in fields(self)}
        )


def learned_range_schedule(
    beta: Tensor, timesteps: Tensor | list[int] | None = None
) -> LearnedRangeSchedule:
    """Derive every coefficient from float32 betas, in the official order of operations.

    Args:
        beta: (S,) float32.
        timesteps: the original timestep of each entry (default ``arange(S)``).
    """
    if beta.dtype != torch.float32:
        raise ValueError(f"beta must be float32 (the official arithmetic), got {beta.dtype}")
    alpha = 1 - beta
    alpha_bar = torch.cumprod(alpha, dim=0)
    alpha_bar_prev = torch.cat([torch.ones(1), alpha_bar[:-1]])
    beta_tilde = beta * (1.0 - alpha_bar_prev) / (1.0 - alpha_bar)
    steps = torch.arange(len(beta)) if timesteps is None else torch.as_tensor(timesteps)
    return LearnedRangeSchedule(
        timesteps=steps.to(torch.int64),
        beta=beta,
        log_beta=torch.log(beta),
        alpha=alpha,
        alpha_bar=alpha_bar,
        alpha_bar_prev=alpha_bar_prev,
        beta_tilde=beta_tilde,
        log_beta_tilde_clipped=torch.log(torch.cat([beta_tilde[1, None], beta_tilde[1:]])),
        coef1_x0=torch.sqrt(1.0 / alpha_bar),
        coef2_x0=torch.sqrt(1.0 / alpha_bar - 1),
        coef1_q=beta * torch.sqrt(alpha_bar_prev) / (1.0 - alpha_bar),
        coef2_q=(1.0 - alpha_bar_prev) * torch.sqrt(alpha) / (1.0 - alpha_bar),
    )


def training_schedule(num_train: int = 1000, max_beta: float = 0.999) -> LearnedRangeSchedule:
    """The T-step schedule the network was trained with."""
    return learned_range_schedule(improved_cosine_betas(num_train, max_beta))


def respaced_schedule(
    num_steps: int, num_train: int = 1000, max_beta: float = 0.999
) -> LearnedRangeSchedule:
    """The S-step respaced schedule of the official sampler (``Diffusion.space(S)``).

    ``num_steps == num_train`` keeps every step but still recomputes β' from ᾱ, as the official code does.
    """
    base = training_schedule(num_train, max_beta)
    kept = space_timesteps(num_train, num_steps)
    schedule = learned_range_schedule(respaced_betas(base.alpha_bar, kept), kept)
    if not torch.isfinite(schedule.coef1_x0).all():
        # e.g. S <= 6 for T = 1000: the last ratio ᾱ[999]/ᾱ[t] rounds 1 − it to exactly 1 in float32
        raise ValueError(
            f"num_steps={num_steps} makes the float32 respaced schedule degenerate (ᾱ = 0 at the last "
            "step, as in the official code); use more steps (at least 7 for 1000 training steps)"
        )
    return schedule


def q_sample(schedule: LearnedRangeSchedule, x0: Tensor, index: Tensor, eps: Tensor) -> Tensor:
    """Forward diffusion ``x_t = sqrt(ᾱ_t)·x0 + sqrt(1 − ᾱ_t)·eps`` (official op order).

    Args:
        schedule: the training schedule (index = original timestep).
        x0, eps: (B, C, ...) clean data and its noise.
        index: (B,) int64 indices into the schedule arrays.
    """
    shape = (-1,) + (1,) * (x0.ndim - 1)
    alpha_bar = schedule.alpha_bar.to(x0.device)[index]
    return (
        torch.sqrt(alpha_bar).reshape(shape) * x0 + torch.sqrt(1 - alpha_bar).reshape(shape) * eps
    )
