"""Samplers of A2V-FDM as functions over a denoiser callable (dawn_spec.md §1.4 step 8, §7 item 9).

``ddim_sample(denoise_fn, x_T, timesteps, alphas_cumprod)`` runs the official update with dynamic thresholding
(Imagen, percentile 0.9 over the whole video of each batch item). ``denoise_fn(x, t) -> eps`` receives the noisy
latent ``x: (B, C, F, H, W)`` and ``t: (B,)`` int64; the caller binds the source features, conditions and
classifier-free guidance (see ``guided``).

Two update rules:

* ``faithful=False`` (default, "correct"): the noise level of the state at time t is ᾱ_t everywhere; the last step
  lands on clean data (ᾱ' = 1). This is textbook DDIM (Song et al. 2021, eq. 12).
* ``faithful=True``: the official code's off-by-one: x0 is predicted with ᾱ_t but the update uses
  ``alphas_cumprod_prev`` (ᾱ_{t-1}) for t and t_next. Use it to reproduce official outputs bit for bit.

In both modes eps is *not* re-derived from the clipped x0 (as the official code). Random draws, in order: x_T
(only when a shape is passed) then one per step that adds noise; they come from ``noise`` (an iterable of
tensors, e.g. recorded official draws) or else ``seeded_randn``: float32 ``torch.randn`` with ``generator``,
cast to the state's dtype, so a seed gives the same draws in every dtype.

``dpmpp_2m_sample`` is an optional fewer-step sampler (DPM-Solver++(2M), Lu et al. 2022) over the same
``denoise_fn``, schedule and thresholding; it is never the default (quality cost: benchmarks/RESULTS.md).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass

import torch
from einops import rearrange
from torch import Tensor
from tqdm.auto import tqdm

from talkinghead.diffusion.schedules import alphas_cumprod_prev

logger = logging.getLogger(__name__)

DenoiseFn = Callable[[Tensor, Tensor], Tensor]
ConstrainFn = Callable[[Tensor, int], Tensor]  # (state x, time t) -> x with known parts imposed


@dataclass(frozen=True)
class DDIMStep:
    """What ``ddim_sample`` hands to ``callback`` after each step. Tensors are (B, C, F, H, W) unless noted."""

    index: int  # step number, 0-based
    t: int  # current time
    t_next: int  # time after this step
    x_t: Tensor  # state fed to the denoiser
    eps: Tensor  # denoiser output
    x0_unclipped: Tensor  # predicted x0 before thresholding
    # (B,) quantile of |x0| before clamp(min=1); None without dynamic thresholding
    threshold_raw: Tensor | None
    x0: Tensor  # predicted x0 after thresholding
    x_next: Tensor  # new state


def quantile(x: Tensor, q: float, dim: int = -1) -> Tensor:
    """``torch.quantile(x, q, dim)`` (linear interpolation) for inputs of any size.

    ``torch.quantile`` refuses inputs above 2**24 elements (dawn_spec.md §6), which long 256-px videos exceed.
    This uses two order statistics (``kthvalue``) and the same rank arithmetic as torch (rank ``q·(n−1)``
    computed in ``x.dtype``, ``lerp`` between the neighbours), so it equals ``torch.quantile`` bit for bit.
    NaNs are not treated specially (torch.quantile would return NaN).

    Args:
        x: any shape, floating point.
        q: quantile in [0, 1].
        dim: dimension to reduce.

    Returns:
        ``x`` with ``dim`` removed.
    """
    if not 0.0 <= q <= 1.0:
        raise ValueError(f"q={q} must be in [0, 1]")
    if not x.is_floating_point():
        raise ValueError(f"quantile needs a floating point tensor, got {x.dtype}")
    n = x.shape[dim]
    if n == 0:
        raise ValueError("quantile of an empty dimension")
    rank = torch.tensor(q, dtype=x.dtype) * (n - 1)
    below = int(rank)  # truncation == floor for rank >= 0
    above = min(below + 1, n - 1) if float(rank) > below else below
    lo = torch.kthvalue(x, below + 1, dim=dim).values
    if above == below:
        return lo
    hi = torch.kthvalue(x, above + 1, dim=dim).values
    return torch.lerp(lo, hi, (rank - below).to(x.device))


def dynamic_threshold(x0: Tensor, percentile: float = 0.9) -> tuple[Tensor, Tensor]:
    """Imagen dynamic thresholding: ``s = max(1, quantile(|x0|, p))`` per batch item, ``x0 = clamp(x0, ±s)/s``.

    Args:
        x0: (B, ...) predicted clean sample.
        percentile: quantile p over all non-batch elements.

    Returns:
        (clipped x0 (B, ...), raw quantile before the clamp (B,)).
    """
    raw = quantile(rearrange(x0, "b ... -> b (...)").abs(), percentile, dim=-1)  # -> (B,)
    s = raw.clamp(min=1.0).view(-1, *((1,) * (x0.ndim - 1)))
    return x0.clamp(-s, s) / s, raw


def guided(denoise_cond: DenoiseFn, denoise_null: DenoiseFn, scale: float) -> DenoiseFn:
    """Classifier-free guidance: ``null + (cond − null)·scale``; the null pass is skipped when ``scale == 1``.

    Same order of evaluation and arithmetic as the official ``forward_with_cond_scale``.
    """
    if scale == 1.0:
        return denoise_cond

    def denoise(x: Tensor, t: Tensor) -> Tensor:
        cond = denoise_cond(x, t)
        null = denoise_null(x, t)
        return null + (cond - null) * scale

    return denoise


def _draw(
    shape: Sequence[int],
    noise: Iterator[Tensor] | None,
    generator: torch.Generator | None,
    device: torch.device,
    dtype: torch.dtype,
) -> Tensor:
    if noise is not None:
        try:
            z = next(noise)
        except StopIteration:
            raise ValueError("the injected noise ran out before sampling finished") from None
        if tuple(z.shape) != tuple(shape):
            raise ValueError(f"injected noise has shape {tuple(z.shape)}, expected {tuple(shape)}")
        return z.to(device=device, dtype=dtype)
    return seeded_randn(shape, generator, device, dtype)


def seeded_randn(
    shape: Sequence[int],
    generator: torch.Generator | None,
    device: torch.device | str,
    dtype: torch.dtype,
) -> Tensor:
    """Standard normal draws that a seed reproduces in every dtype: drawn in float32 on the
    generator's device (``device`` without a generator), then cast and moved.

    ``torch.randn(..., dtype=torch.bfloat16)`` is not the float32 stream rounded (for some sizes it
    is a different stream), so drawing in the compute dtype would make ``--seed`` depend on
    ``--dtype``. Float32 draws are unchanged by this (golden parity).

    Returns:
        (*shape) tensor of ``dtype`` on ``device``.
    """
    where = generator.device if generator is not None else torch.device(device)
    z = torch.randn(tuple(shape), generator=generator, device=where, dtype=torch.float32)
    return z.to(device=device, dtype=dtype)




def _clip_x0(
    x0: Tensor, clip: bool, threshold_quantile: float | None
) -> tuple[Tensor, Tensor | None]:
    """Dynamic thresholding (or a static [-1, 1] clamp, or nothing) of a predicted x0.

    Returns the clipped x0 and the raw per-item quantile (None unless dynamic thresholding ran).
    """
    if not clip:
        return x0, None
    if threshold_quantile is not None:
        return dynamic_threshold(x0, threshold_quantile)
    return x0.clamp(-1.0, 1.0), None

def _initial_state(
    x_T: Tensor | Sequence[int],
    noise: Iterable[Tensor] | None,
    generator: torch.Generator | None,
    device: torch.device | str,
    dtype: torch.dtype,
) -> tuple[Tensor, Iterator[Tensor] | None]:
    """The starting latent (given, or the first draw) and the iterator of the remaining draws."""
    draws = iter(noise) if noise is not None else None
    if isinstance(x_T, Tensor):
        return x_T, draws
    return _draw(tuple(x_T), draws, generator, torch.device(device), dtype), draws

def _check_timesteps(timesteps: Sequence[tuple[int, int]], num_train: int, faithful: bool) -> None:
    if len(timesteps) == 0:
        raise ValueError("timesteps is empty; use schedules.ddim_timesteps(num_steps)")
    lowest = 0 if faithful else -1
    for t, t_next in timesteps:
        if not (num_train > t > t_next >= lowest):
            raise ValueError(
                f"time pair ({t}, {t_next}) must satisfy {num_train} > t > t_next >= {lowest}"
            )


@torch.no_grad()
def ddim_sample(
    denoise_fn: DenoiseFn,
    x_T: Tensor | Sequence[int],
    timesteps: Sequence[tuple[int, int]],
    alphas_cumprod: Tensor,
    *,
    eta: float = 1.0,
    generator: torch.Generator | None = None,
    noise: Iterable[Tensor] | None = None,
    threshold_quantile: float | None = 0.9,
    clip_x0: bool = True,
    faithful: bool = False,
    device: torch.device | str | None = None,
    dtype: torch.dtype = torch.float32,
    callback: Callable[[DDIMStep], None] | None = None,
    progress: bool = False,
    constrain: ConstrainFn | None = None,
    land_clean: bool = True,
) -> Tensor:
    """DDIM sampling with dynamic thresholding (official A2V-FDM sampler, see the module docstring).

    Per step (t, t_next): ``eps = denoise_fn(x, t)``; ``x0 = sqrt(1/ᾱ_t)·x − sqrt(1/ᾱ_t − 1)·eps``;
    ``x0 = clamp(x0, ±s)/s`` with ``s = max(1, quantile(|x0|, 0.9))``;
    ``σ = η·sqrt((1 − a/a')(1 − a')/(1 − a))``, ``c = sqrt(1 − a' − σ²)``, ``x = sqrt(a')·x0 + c·eps + σ·z``.
    Correct mode (default): ``a = ᾱ_t``, ``a' = ᾱ_{t_next}`` and ``a' = 1`` at the last step (or ``t_next < 0``).
    Faithful mode: ``a = ᾱ_{t−1}``, ``a' = ᾱ_{t_next−1}`` (``alphas_cumprod_prev``), noise iff ``t_next > 0``.

    Args:
        denoise_fn: ``(x (B, C, F, H, W), t (B,) int64) -> eps`` of x's shape.
        x_T: the initial noise, or a shape to draw it (first draw).
        timesteps: (t, t_next) pairs, e.g. ``schedules.ddim_timesteps(20)``.
        alphas_cumprod: (T,) ᾱ of the training schedule. Coefficients are derived from it in float64 then cast to
            ``x``'s dtype, so a float64 schedule reproduces the official float32 buffers exactly.
        eta: 1.0 = ancestral DDIM (official), 0.0 = deterministic.
        generator: RNG for the draws when ``noise`` is None.
        noise: injected draws in call order (x_T first when a shape is given, then one per noisy step).
        threshold_quantile: dynamic-thresholding percentile; None clips statically to [−1, 1].
        clip_x0: False disables any clipping of x0.
        faithful: replicate the official off-by-one (see above).
        device, dtype: where/what to draw x_T when a shape is given (default: ``alphas_cumprod.device``).
        callback: called with a ``DDIMStep`` after every step.
        progress: show a tqdm bar.
        constrain: ``(x, t) -> x`` applied to the state before every denoiser call (inpainting:
            known frames re-noised to step t's level); None = unconstrained.
        land_clean: correct mode: the last step lands on clean data (ᾱ' = 1); False stops it at
            ᾱ of its ``t_next``, so ``timesteps`` may be a segment of a longer grid (the teacher's
            two steps in ``dawn/training/distill.py``). ``t_next < 0`` always lands on clean data.

    Returns:
        x: (B, C, F, H, W) the final sample.
    """
    if alphas_cumprod.ndim != 1:
        raise ValueError(f"alphas_cumprod must be 1-D, got shape {tuple(alphas_cumprod.shape)}")
    if eta < 0:
        raise ValueError(f"eta={eta} must be >= 0")
    num_train = alphas_cumprod.shape[0]
    _check_timesteps(timesteps, num_train, faithful)
    x, draws = _initial_state(x_T, noise, generator, device or alphas_cumprod.device, dtype)
    batch = x.shape[0]

    ab64 = alphas_cumprod.detach().to(device="cpu", dtype=torch.float64)
    # the official stores these as float32 buffers computed from float64; mirror that rounding
    as_x = {"device": x.device, "dtype": x.dtype}
    sqrt_recip = torch.sqrt(1.0 / ab64).to(**as_x)
    sqrt_recipm1 = torch.sqrt(1.0 / ab64 - 1).to(**as_x)
    ab = ab64.to(**as_x)
    ab_prev = alphas_cumprod_prev(ab64).to(**as_x)
    one = torch.ones((), **as_x)

    steps = list(timesteps)
    for i, (t, t_next) in enumerate(tqdm(steps, disable=not progress, desc="DDIM")):
        final = (land_clean and i == len(steps) - 1) or t_next < 0
        if faithful:
            a, a_next = ab_prev[t], ab_prev[t_next]
            add_noise = t_next > 0
        else:
            a, a_next = ab[t], (one if final else ab[t_next])
            add_noise = not final

        if constrain is not None:
            x = constrain(x, t)
        t_batch = torch.full((batch,), t, device=x.device, dtype=torch.long)
        eps = denoise_fn(x, t_batch)
        x0_raw = sqrt_recip[t] * x - sqrt_recipm1[t] * eps
        x0, raw = _clip_x0(x0_raw, clip_x0, threshold_quantile)

        sigma = eta * ((1 - a / a_next) * (1 - a_next) / (1 - a)).sqrt()
        # rounding may push 1 - a' - σ² a hair below 0; the exact value is >= 0 for eta <= 1
        c = ((1 - a_next) - sigma**2).clamp(min=0).sqrt()
        x_next = x0 * a_next.sqrt() + c * eps
        if add_noise:
            # drawn even when eta == 0 (σ = 0), as the official code does, so streams stay aligned
            x_next = x_next + sigma * _draw(x.shape, draws, generator, x.device, x.dtype)
        logger.debug("DDIM step %d: t=%d -> %d", i, t, t_next)
        if callback is not None:
            callback(DDIMStep(i, t, t_next, x, eps, x0_raw, raw, x0, x_next))
        x = x_next
    return x


@torch.no_grad()
def dpmpp_2m_sample(
    denoise_fn: DenoiseFn,
    x_T: Tensor | Sequence[int],
    timesteps: Sequence[tuple[int, int]],
    alphas_cumprod: Tensor,
    *,
    generator: torch.Generator | None = None,
    noise: Iterable[Tensor] | None = None,
    threshold_quantile: float | None = 0.9,
    clip_x0: bool = True,
    device: torch.device | str | None = None,
    dtype: torch.dtype = torch.float32,
    callback: Callable[[DDIMStep], None] | None = None,
    progress: bool = False,
    constrain: ConstrainFn | None = None,
) -> Tensor:
    """DPM-Solver++(2M) (Lu et al. 2022, Alg. 2): a deterministic second-order multistep ODE solver.

    A fewer-step alternative to DDIM (not the official sampler; its quality cost is measured in
    ``benchmarks/sampler_quality.py``). It is a data-prediction solver: x0 is predicted from eps as in DDIM and
    dynamically thresholded the same way, then, with ``α = sqrt(ᾱ)``, ``σ = sqrt(1 − ᾱ)``, ``λ = log(α/σ)``
    and ``h = λ_{t_next} − λ_t``::

        D = x0                                            (first step and last step: first order = DDIM, η=0)
        D = (1 + 1/(2r))·x0 − 1/(2r)·x0_prev,  r = h_prev / h    (otherwise)
        x = (σ_{t_next}/σ_t)·x − α_{t_next}·(e^{−h} − 1)·D

    The last step lands on clean data (σ = 0), where the update reduces to ``x = D = x0``. The noise level of
    the state at time t is ᾱ_t (the "correct" DDIM convention; there is no faithful mode).

    Args:
        denoise_fn: ``(x (B, C, F, H, W), t (B,) int64) -> eps`` of x's shape.
        x_T: the initial noise, or a shape to draw it (the only random draw).
        timesteps: (t, t_next) pairs as for ``ddim_sample``, e.g. ``schedules.ddim_timesteps(10)``.
        alphas_cumprod: (T,) ᾱ of the training schedule; coefficients are computed in float64.
        generator: RNG for x_T when ``noise`` is None.
        noise: injected draws (only x_T, when a shape is given).
        threshold_quantile: dynamic-thresholding percentile; None clips statically to [−1, 1].
        clip_x0: False disables any clipping of x0.
        device, dtype: where/what to draw x_T when a shape is given (default: ``alphas_cumprod.device``).
        callback: called with a ``DDIMStep`` after every step (``x0`` is the thresholded prediction, not D).
        progress: show a tqdm bar.
        constrain: ``(x, t) -> x`` applied to the state before every denoiser call (as in
            ``ddim_sample``).

    Returns:
        x: (B, C, F, H, W) the final sample.
    """
    if alphas_cumprod.ndim != 1:
        raise ValueError(f"alphas_cumprod must be 1-D, got shape {tuple(alphas_cumprod.shape)}")
    _check_timesteps(timesteps, alphas_cumprod.shape[0], faithful=False)
    x, _ = _initial_state(x_T, noise, generator, device or alphas_cumprod.device, dtype)
    batch = x.shape[0]

    ab = alphas_cumprod.detach().to(device="cpu", dtype=torch.float64)
    alpha, sigma = ab.sqrt(), (1 - ab).sqrt()
    lam = alpha.log() - sigma.log()

    steps = list(timesteps)
    x0_prev: Tensor | None = None
    h_prev = 0.0
    for i, (t, t_next) in enumerate(tqdm(steps, disable=not progress, desc="DPM-Solver++")):
        final = i == len(steps) - 1 or t_next < 0
        if constrain is not None:
            x = constrain(x, t)
        t_batch = torch.full((batch,), t, device=x.device, dtype=torch.long)
        eps = denoise_fn(x, t_batch)
        x0_raw = (x - float(sigma[t]) * eps) / float(alpha[t])
        x0, raw = _clip_x0(x0_raw, clip_x0, threshold_quantile)

        if final:
            x_next = x0  # σ_{t_next} = 0, e^{−h} = 0: the step returns the data prediction itself
            h = math.inf
        else:
            h = float(lam[t_next] - lam[t])
            if x0_prev is None:
                d = x0
            else:
                half_inv_r = 0.5 * h / h_prev  # 1/(2r)
                d = x0 * (1 + half_inv_r) - x0_prev * half_inv_r
            x_next = x * float(sigma[t_next] / sigma[t]) - d * float(alpha[t_next] * math.expm1(-h))
        logger.debug("DPM-Solver++ step %d: t=%d -> %d", i, t, t_next)
        if callback is not None:
            callback(DDIMStep(i, t, t_next, x, eps, x0_raw, raw, x0, x_next))
        x0_prev, h_prev = x0, h
        x = x_next
    return x
