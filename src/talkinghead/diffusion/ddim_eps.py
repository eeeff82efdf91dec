"""DDIM (Song et al. 2021, eq. 12) over an eps-predicting denoiser and any subset of training timesteps.

A fewer-step alternative to the learned-range ancestral sampler over the *same* network: the denoiser
may return eps ‖ v (the variance channels are ignored, DDIM does not use a variance). Following
guided-diffusion's ``ddim_sample``: x̂0 is clamped to [-1, 1] and eps is re-derived from the clamped x̂0,
then ``x_prev = sqrt(ᾱ_prev)·x̂0 + sqrt(1 − ᾱ_prev − σ²)·eps + σ·z`` with
``σ = eta·sqrt((1 − ᾱ_prev)/(1 − ᾱ)·(1 − ᾱ/ᾱ_prev))``. Coefficients are taken from the float64 training
ᾱ at the original timesteps (no float32 respacing: that quirk belongs to the official ancestral sampler).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch import Tensor

DenoiseFn = Callable[[Tensor, Tensor], Tensor]
NoiseFn = Callable[[torch.Size], Tensor]
StepCallback = Callable[[int, int], None]


def ddim_eps_sample(
    denoise_fn: DenoiseFn,
    x_T: Tensor,
    timesteps: Sequence[int],
    alphas_cumprod: Tensor,
    *,
    eta: float = 0.0,
    noise: NoiseFn | None = None,
    callback: StepCallback | None = None,
) -> Tensor:
    """Run DDIM from the largest to the smallest of ``timesteps``, ending on clean data.

    Args:
        denoise_fn: ``(x_t (B, C, ...), t (B,) int64) -> eps`` or ``eps ‖ v`` (B, ≥C, ...).
        x_T: (B, C, ...) start noise.
        timesteps: increasing original timesteps to visit (e.g. ``respacing.space_timesteps(T, S)``).
        alphas_cumprod: (T,) training ᾱ (float64 recommended).
        eta: 0 is deterministic DDIM; 1 approaches ancestral DDPM noise levels.
        noise: ``noise(shape)`` for eta > 0.
        callback: ``(steps done, total)`` after every step.
    Returns:
        (B, C, ...) x_0 in [-1, 1].
    """
    if eta > 0 and noise is None:
        raise ValueError("eta > 0 needs a noise function")
    steps = sorted(int(t) for t in timesteps)
    if len(steps) < 1 or steps[0] < 0 or steps[-1] >= alphas_cumprod.shape[0]:
        raise ValueError(f"timesteps must lie in [0, {alphas_cumprod.shape[0]})")
    ab = alphas_cumprod.double()
    x, channels = x_T, x_T.shape[1]
    total = len(steps)
    for done, i in enumerate(reversed(range(total))):
        t = steps[i]
        a_t = ab[t]
        a_prev = ab[steps[i - 1]] if i > 0 else torch.ones((), dtype=torch.float64)
        out = denoise_fn(x, torch.full((x.shape[0],), t, dtype=torch.int64, device=x.device))
        eps = out[:, :channels]
        x0 = ((x - (1 - a_t).sqrt().item() * eps) / a_t.sqrt().item()).clamp(-1, 1)
        eps = (x - a_t.sqrt().item() * x0) / (1 - a_t).sqrt().item()
        sigma = eta * ((1 - a_prev) / (1 - a_t) * (1 - a_t / a_prev)).sqrt().item()
        x = a_prev.sqrt().item() * x0 + (1 - a_prev - sigma**2).clamp(min=0).sqrt().item() * eps
        if sigma > 0:
            assert noise is not None
            x = x + sigma * noise(x.shape).to(x)
        if callback is not None:
            callback(done + 1, total)
    return x
