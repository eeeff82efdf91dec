"""What a denoiser predicts: the noise eps (DDPM, every official model here) or v (Salimans & Ho 2022).

With ``x_t = sqrt(ᾱ)·x0 + sqrt(1 − ᾱ)·eps`` the velocity is ``v = sqrt(ᾱ)·eps − sqrt(1 − ᾱ)·x0``, and
``eps = sqrt(ᾱ)·v + sqrt(1 − ᾱ)·x_t``, ``x0 = sqrt(ᾱ)·x_t − sqrt(1 − ᾱ)·v``.

Why v exists here: under the improved-DDPM cosine schedule ᾱ_999 = 2.4e-9, so x0 recovered from an eps
prediction multiplies the eps error by sqrt((1 − ᾱ)/ᾱ) = 2e4 near t = T. A large model learns eps
precisely enough; a small one trained briefly does not, and every sampler started from pure noise lands
far from the face (benchmarks/diffused_heads_probe.py). A v-predicting network's x0 error stays the
size of its output error at every t.

The samplers stay eps-based: ``eps_denoiser`` turns a v-network into an eps-network for them. That
conversion is evaluated in float32; near t = T the ancestral step's x0 coefficients (~2e4) turn its
rounding into about 2e-3 of x0 before the clamp, a quarter of one 8-bit level.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

PREDICTIONS = ("eps", "v")
DenoiseFn = Callable[[Tensor, Tensor], Tensor]


def check_prediction(prediction: str) -> str:
    """``prediction`` if it is one of ``PREDICTIONS``; a ValueError saying what to pass otherwise."""
    if prediction not in PREDICTIONS:
        raise ValueError(f"prediction={prediction!r} must be one of {', '.join(PREDICTIONS)}")
    return prediction


def _coefficients(alpha_bar: Tensor, like: Tensor) -> tuple[Tensor, Tensor]:
    """(sqrt(ᾱ), sqrt(1 − ᾱ)) of (B,) ᾱ, shaped to broadcast against ``like`` (B, C, ...)."""
    a = alpha_bar.to(like).reshape((-1,) + (1,) * (like.ndim - 1))
    return a.sqrt(), (1 - a).sqrt()


def v_target(x0: Tensor, eps: Tensor, alpha_bar: Tensor) -> Tensor:
    """v = sqrt(ᾱ)·eps − sqrt(1 − ᾱ)·x0 of (B, C, ...) data and noise at (B,) ᾱ."""
    s, r = _coefficients(alpha_bar, x0)
    return s * eps - r * x0


def eps_from_v(v: Tensor, x_t: Tensor, alpha_bar: Tensor) -> Tensor:
    """eps = sqrt(ᾱ)·v + sqrt(1 − ᾱ)·x_t of (B, C, ...) v and x_t at (B,) ᾱ."""
    s, r = _coefficients(alpha_bar, x_t)
    return s * v + r * x_t


def eps_denoiser(denoise_fn: DenoiseFn, alpha_bar: Tensor) -> DenoiseFn:
    """``denoise_fn(x_t, t) -> v ‖ extra`` as ``(x_t, t) -> eps ‖ extra``.

    Args:
        denoise_fn: a v-predicting network; ``t`` (B,) int64 original timesteps; its output's first
            ``x_t.shape[1]`` channels are v, the rest (a learned variance, say) pass through.
        alpha_bar: (T,) the training schedule's ᾱ, on the network's device.
    """

    def denoise(x_t: Tensor, t: Tensor) -> Tensor:
        out = denoise_fn(x_t, t)
        c = x_t.shape[1]
        eps = eps_from_v(out[:, :c], x_t, alpha_bar[t])
        return torch.cat([eps, out[:, c:]], dim=1)

    return denoise
