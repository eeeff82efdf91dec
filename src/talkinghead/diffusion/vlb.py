"""The variational-bound term of improved DDPM (Nichol & Dhariwal 2021, Sec. 3.1, "L_vlb" of L_hybrid).

``vlb_loss`` is KL(q(x_{t−1} | x_t, x0) ‖ p_θ(x_{t−1} | x_t)) in bits per dimension, and at t = 0 the
discretised-Gaussian negative log-likelihood of x0 (8-bit bins of half-width 1/255 on [-1, 1], open edge
bins below −0.999 / above 0.999, the tanh approximation of the normal CDF). The model's x̂0 is clamped to
[-1, 1] exactly as in sampling. Pass eps with ``.detach()`` to train only the variance through this term
(the hybrid objective's stop-gradient).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from talkinghead.diffusion.respacing import LearnedRangeSchedule


def gaussian_kl(mean1: Tensor, logvar1: Tensor, mean2: Tensor, logvar2: Tensor) -> Tensor:
    """Element-wise KL(N(mean1, e^logvar1) ‖ N(mean2, e^logvar2)) in nats."""
    return 0.5 * (
        -1.0
        + logvar2
        - logvar1
        + torch.exp(logvar1 - logvar2)
        + (mean1 - mean2) ** 2 * torch.exp(-logvar2)
    )


def approx_standard_normal_cdf(x: Tensor) -> Tensor:
    """The tanh approximation of Φ(x) used by improved DDPM."""
    return 0.5 * (1.0 + torch.tanh(math.sqrt(2.0 / math.pi) * (x + 0.044715 * x**3)))


def discretized_gaussian_nll(x: Tensor, means: Tensor, log_scales: Tensor) -> Tensor:
    """Element-wise −log P(x) of 8-bit data in [-1, 1] under N(means, e^(2·log_scales)), in nats."""
    centered = x - means
    inv_std = torch.exp(-log_scales)
    cdf_plus = approx_standard_normal_cdf(inv_std * (centered + 1.0 / 255.0))
    cdf_min = approx_standard_normal_cdf(inv_std * (centered - 1.0 / 255.0))
    log_cdf_plus = torch.log(cdf_plus.clamp(min=1e-12))
    log_one_minus_cdf_min = torch.log((1.0 - cdf_min).clamp(min=1e-12))
    log_delta = torch.log((cdf_plus - cdf_min).clamp(min=1e-12))
    log_probs = torch.where(
        x < -0.999, log_cdf_plus, torch.where(x > 0.999, log_one_minus_cdf_min, log_delta)
    )
    return -log_probs


def _at(values: Tensor, index: Tensor, like: Tensor) -> Tensor:
    return values.to(like.device)[index].reshape((-1,) + (1,) * (like.ndim - 1))


def vlb_loss(
    schedule: LearnedRangeSchedule, x0: Tensor, x_t: Tensor, index: Tensor, model_out: Tensor
) -> Tensor:
    """Per-sample L_vlb in bits/dim.

    Args:
        schedule: the training schedule (index = original timestep).
        x0, x_t: (B, C, H, W) clean and noisy data.
        index: (B,) int64 timesteps.
        model_out: (B, 2C, H, W) eps ‖ v (detach eps for the hybrid objective).
    Returns:
        (B,) losses.
    """
    eps, v = model_out.chunk(2, dim=1)
    nu = (v + 1) / 2
    p_logvar = nu * _at(schedule.log_beta, index, x_t) + (1 - nu) * _at(
        schedule.log_beta_tilde_clipped, index, x_t
    )
    x0_pred = (
        _at(schedule.coef1_x0, index, x_t) * x_t - _at(schedule.coef2_x0, index, x_t) * eps
    ).clamp(-1, 1)
    c1, c2 = _at(schedule.coef1_q, index, x_t), _at(schedule.coef2_q, index, x_t)
    p_mean = c1 * x0_pred + c2 * x_t
    q_mean = c1 * x0 + c2 * x_t
    q_logvar = _at(schedule.log_beta_tilde_clipped, index, x_t)
    kl = gaussian_kl(q_mean, q_logvar, p_mean, p_logvar).mean(dim=(1, 2, 3)) / math.log(2.0)
    nll = discretized_gaussian_nll(x0, p_mean, 0.5 * p_logvar).mean(dim=(1, 2, 3)) / math.log(2.0)
    return torch.where(index == 0, nll, kl)
