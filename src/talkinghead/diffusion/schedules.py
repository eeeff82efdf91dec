"""Noise schedules and DDIM time grids of A2V-FDM (dawn_spec.md §2.3.3, §1.4 step 8).

Pure functions. The official model (a video-diffusion-pytorch ``GaussianDiffusion``) uses the cosine schedule of
Nichol & Dhariwal (2021) with ``s = 0.008`` over 1000 training steps, computed in float64 and stored as float32
buffers. ``diffusion_buffers`` reproduces all twelve buffers that sit in ``checkpoint['diffusion']`` next to the
UNet weights, so a converter can check or drop them.

Glossary: ``alphas_cumprod[t]`` = ᾱ_t (index t = 0..T-1; clean data is ᾱ = 1, "index -1");
``alphas_cumprod_prev[t]`` = ᾱ_{t-1} with ᾱ_{-1} = 1.
"""

from __future__ import annotations

import itertools
import math

import torch
from torch import Tensor

# Names (and order) of the schedule buffers the official GaussianDiffusion registers.
BUFFER_NAMES: tuple[str, ...] = (
    "betas",
    "alphas_cumprod",
    "alphas_cumprod_prev",
    "sqrt_alphas_cumprod",
    "sqrt_one_minus_alphas_cumprod",
    "log_one_minus_alphas_cumprod",
    "sqrt_recip_alphas_cumprod",
    "sqrt_recipm1_alphas_cumprod",
    "posterior_variance",
    "posterior_log_variance_clipped",
    "posterior_mean_coef1",
    "posterior_mean_coef2",
)

_MAX_BETA = 0.9999  # the official clip; keeps ᾱ_{T-1} > 0 so 1/ᾱ stays finite


def _check_num_steps(num_steps: int) -> None:
    if not isinstance(num_steps, int) or num_steps < 1:
        raise ValueError(f"num_steps={num_steps!r} must be a positive int")


def cosine_betas(num_steps: int = 1000, s: float = 0.008) -> Tensor:
    """Cosine-schedule betas in float64: ``β_t = clip(1 − f(t+1)/f(t), 0, 0.9999)``.

    ``f(x) = cos(((x/T) + s)/(1 + s) · π/2)²`` normalised by ``f(0)``.

    Returns:
        betas: (num_steps,) float64.
    """
    _check_num_steps(num_steps)
    x = torch.linspace(0, num_steps, num_steps + 1, dtype=torch.float64)
    f = torch.cos(((x / num_steps) + s) / (1 + s) * math.pi * 0.5) ** 2
    f = f / f[0]
    return torch.clip(1 - (f[1:] / f[:-1]), 0, _MAX_BETA)


def cosine_alphas_cumprod(
    num_steps: int = 1000, s: float = 0.008, dtype: torch.dtype = torch.float32
) -> Tensor:
    """ᾱ_t = ∏_{i<=t} (1 − β_i) of the cosine schedule, computed in float64.

    Args:
        num_steps: number of training diffusion steps T.
        s: cosine offset.
        dtype: float32 (default) gives exactly the official buffer; float64 keeps full precision, which lets the
            sampler derive its coefficients exactly as the official float64 buffers were derived.

    Returns:
        alphas_cumprod: (num_steps,), decreasing from ≈0.99996 to ≈2.4e-10 (T=1000).
    """
    return torch.cumprod(1 - cosine_betas(num_steps, s), dim=0).to(dtype)


def alphas_cumprod_prev(alphas_cumprod: Tensor) -> Tensor:
    """ᾱ_{t-1}: the schedule shifted right by one with 1 (clean data) in front. Shape (T,) -> (T,)."""
    if alphas_cumprod.ndim != 1:
        raise ValueError(f"alphas_cumprod must be 1-D, got shape {tuple(alphas_cumprod.shape)}")
    return torch.cat([alphas_cumprod.new_ones(1), alphas_cumprod[:-1]])


def scaled_linear_betas(
    num_steps: int = 1000, start: float = 0.0015, end: float = 0.0195
) -> Tensor:
    """LDM's "linear" schedule (DiffTalk): ``β = linspace(√start, √end, T)²`` in float64. Returns (T,)."""
    _check_num_steps(num_steps)
    return torch.linspace(start**0.5, end**0.5, num_steps, dtype=torch.float64) ** 2


def diffusion_buffers(num_steps: int = 1000, s: float = 0.008) -> dict[str, Tensor]:
    """The twelve schedule buffers of the official ``GaussianDiffusion`` (float64 maths, float32 storage).

    Returns:
        ``{name: (num_steps,) float32}`` for every name in ``BUFFER_NAMES``, bit-identical to the official
        ``checkpoint['diffusion']`` buffers.
    """
    return buffers_from_betas(cosine_betas(num_steps, s))


def buffers_from_betas(betas: Tensor) -> dict[str, Tensor]:
    """The twelve buffers of a DDPM (video-diffusion-pytorch, LDM) from float64 betas (T,).

    Computed in float64 and cast to float32, as both official codes register them.
    """
    alphas = 1.0 - betas
    ab = torch.cumprod(alphas, dim=0)
    ab_prev = alphas_cumprod_prev(ab)
    posterior_variance = betas * (1.0 - ab_prev) / (1.0 - ab)
    buffers = {
        "betas": betas,
        "alphas_cumprod": ab,
        "alphas_cumprod_prev": ab_prev,
        "sqrt_alphas_cumprod": torch.sqrt(ab),
        "sqrt_one_minus_alphas_cumprod": torch.sqrt(1.0 - ab),
        "log_one_minus_alphas_cumprod": torch.log(1.0 - ab),
        "sqrt_recip_alphas_cumprod": torch.sqrt(1.0 / ab),
        "sqrt_recipm1_alphas_cumprod": torch.sqrt(1.0 / ab - 1),
        "posterior_variance": posterior_variance,
        # clipped because the posterior variance is 0 at t = 0
        "posterior_log_variance_clipped": torch.log(posterior_variance.clamp(min=1e-20)),
        "posterior_mean_coef1": betas * torch.sqrt(ab_prev) / (1.0 - ab),
        "posterior_mean_coef2": (1.0 - ab_prev) * torch.sqrt(alphas) / (1.0 - ab),
    }
    return {name: buffers[name].to(torch.float32) for name in BUFFER_NAMES}


def ddim_timesteps(num_steps: int, num_train: int = 1000) -> list[tuple[int, int]]:
    """The official DDIM (t, t_next) pairs.

    ``times = reversed(int(linspace(0, T, num_steps + 2)[:-1]))`` in float32, then consecutive pairs; the grid
    therefore never starts at T-1 (20 steps start at 952, 3 steps at 750) and always ends at 0.

    Examples:
        ``ddim_timesteps(3) == [(750, 500), (500, 250), (250, 0)]``;
        ``ddim_timesteps(20) == [(952, 904), (904, 857), ..., (95, 47), (47, 0)]``.

    Returns:
        num_steps pairs of python ints, t strictly decreasing.
    """
    _check_num_steps(num_steps)
    _check_num_steps(num_train)
    if num_steps >= num_train:
        raise ValueError(f"num_steps={num_steps} must be smaller than num_train={num_train}")
    # float32 linspace + truncation, as the official code does; float64 could round differently
    times = torch.linspace(0.0, float(num_train), num_steps + 2, dtype=torch.float32)[:-1]
    grid = list(reversed(times.int().tolist()))
    return list(itertools.pairwise(grid))
