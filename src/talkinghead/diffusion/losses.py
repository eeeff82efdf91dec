"""Training objective of A2V-FDM: eps-prediction with an elementwise L2 loss (dawn_spec.md §2.3.3, §5.3).

``x_t = sqrt(ᾱ_t)·x0 + sqrt(1 − ᾱ_t)·eps`` (``q_sample``); the denoiser predicts eps and the loss is
``mean((eps − eps_hat)²)``. The official trainer also computes a dynamically thresholded x0 from the prediction
(used by its lip loss); ``predict_x0`` gives the unclipped one, ``samplers.dynamic_threshold`` clips it.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor


def _coef(values: Tensor, t: Tensor, like: Tensor) -> Tensor:
    """values[t] shaped (B, 1, ..., 1) to broadcast over ``like`` (B, ...)."""
    if t.ndim != 1 or t.shape[0] != like.shape[0]:
        raise ValueError(f"t must have shape ({like.shape[0]},), got {tuple(t.shape)}")
    out = values.to(device=like.device)[t.to(like.device)].to(like.dtype)
    return out.view(-1, *((1,) * (like.ndim - 1)))


def sample_timesteps(
    batch: int,
    num_train: int = 1000,
    *,
    generator: torch.Generator | None = None,
    device: torch.device | str | None = None,
) -> Tensor:
    """Uniform training times ``t ~ U{0, …, num_train − 1}``. Returns (batch,) int64."""
    return torch.randint(0, num_train, (batch,), generator=generator, device=device)


def q_sample(x0: Tensor, t: Tensor, alphas_cumprod: Tensor, noise: Tensor) -> Tensor:
    """Forward diffusion ``x_t = sqrt(ᾱ_t)·x0 + sqrt(1 − ᾱ_t)·noise``.

    Args:
        x0: (B, C, F, H, W) clean latents.
        t: (B,) int64 times.
        alphas_cumprod: (T,) schedule.
        noise: eps, same shape as x0.

    Returns:
        x_t: same shape as x0.
    """
    if noise.shape != x0.shape:
        raise ValueError(f"noise shape {tuple(noise.shape)} != x0 shape {tuple(x0.shape)}")
    ab = alphas_cumprod.double()
    return _coef(ab.sqrt(), t, x0) * x0 + _coef((1 - ab).sqrt(), t, x0) * noise


def predict_x0(x_t: Tensor, t: Tensor, alphas_cumprod: Tensor, eps: Tensor) -> Tensor:
    """Invert ``q_sample`` with a predicted eps: ``x0 = sqrt(1/ᾱ_t)·x_t − sqrt(1/ᾱ_t − 1)·eps``."""
    ab = alphas_cumprod.double()
    return _coef((1 / ab).sqrt(), t, x_t) * x_t - _coef((1 / ab - 1).sqrt(), t, x_t) * eps


def eps_mse_loss(pred_noise: Tensor, noise: Tensor, reduction: str = "mean") -> Tensor:
    """Elementwise L2 between predicted and true eps (``reduction``: 'mean' | 'none' as in F.mse_loss)."""
    if pred_noise.shape != noise.shape:
        raise ValueError(
            f"pred_noise shape {tuple(pred_noise.shape)} != noise {tuple(noise.shape)}"
        )
    return F.mse_loss(pred_noise, noise, reduction=reduction)
