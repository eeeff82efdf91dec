"""DDIM with latent inpainting, as LDM / DiffTalk sample (spec §2.6; MANIFEST quirks 15-19).

The update is diffusers' ``DDIMScheduler`` (eta 0, "leading" spacing with offset 1, so 200 steps
visit 996, 991, ..., 1 and the last step's previous alpha is ᾱ_0, not 1: ``set_alpha_to_one=False``),
loaded with the model's float32 ``alphas_cumprod`` *as LDM computes it*: in float64, then cast.
diffusers would otherwise take a float32 cumulative product, which drifts from the official table
by up to ~1e-6 relative; with LDM's table the scheduler's step is the official one to rounding.

Around it, the DiffTalk loop (``ddim_ldm_ref_inpaint.py``): before **every** denoiser call the kept
region is replaced by the target latent noised to the current time with fresh noise,
``x <- q_sample(x0, t) * mask + (1 - mask) * x`` (mask = 1 keep, 0 generate); no blending after
the last step. Random draws, in the official order: x_T, then per step the q_sample noise and the
eta-noise that LDM draws even at eta = 0 (multiplied by sigma = 0), so a seeded generator gives
the official draws of ``torch.manual_seed(seed)``. ``noise`` replaces them (e.g. recorded draws).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass

import torch
from diffusers import DDIMScheduler
from torch import Tensor

from talkinghead.diffusion.samplers import seeded_randn

DenoiseFn = Callable[[Tensor, Tensor], Tensor]


@dataclass(frozen=True)
class MaskedDDIMStep:
    """What ``masked_ddim_sample`` hands to ``on_step`` after each step (tensors (B, C, h, w))."""

    index: int  # step number, 0-based
    t: int  # current time
    x_in: Tensor  # denoiser input after the mask blending
    eps: Tensor  # denoiser output
    pred_x0: Tensor  # predicted clean latent
    x_prev: Tensor  # state after the step


def ldm_ddim_scheduler(alphas_cumprod: Tensor) -> DDIMScheduler:
    """diffusers' DDIM set up as LDM's ``DDIMSampler`` with ``ddim_discretize="uniform"``, eta 0.

    Args:
        alphas_cumprod: (T,) float32 table of the model (``buffers_from_betas``).
    """
    num_train = alphas_cumprod.numel()
    scheduler = DDIMScheduler(
        num_train_timesteps=num_train,
        trained_betas=None,
        beta_schedule="linear",  # replaced by the model's table below
        clip_sample=False,
        set_alpha_to_one=False,  # the last step goes to ᾱ_0 (0.9985), as LDM
        steps_offset=1,  # LDM's time grid is range(0, T, T // S) + 1
        timestep_spacing="leading",
        prediction_type="epsilon",
    )
    scheduler.alphas_cumprod = alphas_cumprod.float().cpu().clone()
    scheduler.final_alpha_cumprod = scheduler.alphas_cumprod[0]
    return scheduler


def ldm_ddim_timesteps(num_steps: int, num_train: int = 1000) -> list[int]:
    """LDM's uniform DDIM grid in sampling order: 200 steps -> [996, 991, ..., 6, 1]."""
    if not 1 <= num_steps <= num_train:
        raise ValueError(f"num_steps={num_steps} must be in 1..{num_train}")
    return [t + 1 for t in reversed(range(0, num_train, num_train // num_steps))][-num_steps:]


def masked_ddim_sample(
    denoise_fn: DenoiseFn,
    x0: Tensor,
    mask: Tensor,
    alphas_cumprod: Tensor,
    num_steps: int,
    *,
    x_T: Tensor | None = None,
    generator: torch.Generator | None = None,
    noise: Iterable[Tensor] | None = None,
    on_step: Callable[[MaskedDDIMStep], None] | None = None,
) -> Tensor:
    """Sample latents whose kept region follows ``x0`` and whose masked region is generated.

    Args:
        denoise_fn: ``(x (B, C, h, w), t (B,) int64) -> eps``; conditions bound by the caller.
        x0: (B, C, h, w) latent of the frame whose unmasked part is kept.
        mask: (B or 1, 1, h, w), 1 = keep, 0 = generate.
        alphas_cumprod: (T,) float32 schedule table.
        num_steps: DDIM steps (official 200).
        x_T: starting noise; drawn first when None.
        generator: source of the draws when ``noise`` is None.
        noise: the draws in order (x_T unless given, then 2 per step), e.g. recorded official ones.
        on_step: called after every step (also the pipeline's progress hook).
    Returns:
        (B, C, h, w) latent after the last update (not blended again, as the official).
    """
    if mask.ndim != 4 or mask.shape[1] != 1 or mask.shape[-2:] != x0.shape[-2:]:
        raise ValueError(
            f"mask must be (B, 1, h, w) for x0 {tuple(x0.shape)}, got {tuple(mask.shape)}"
        )
    draws: Iterator[Tensor] | None = iter(noise) if noise is not None else None

    def draw() -> Tensor:
        if draws is None:
            return seeded_randn(x0.shape, generator, x0.device, x0.dtype)
        z = next(draws, None)
        if z is None or z.shape != x0.shape:
            raise ValueError(f"the injected noise ran out or does not have shape {tuple(x0.shape)}")
        return z.to(device=x0.device, dtype=x0.dtype)

    scheduler = ldm_ddim_scheduler(alphas_cumprod)
    scheduler.set_timesteps(num_steps)
    table = alphas_cumprod.to(device=x0.device, dtype=torch.float64)
    sqrt_ab, sqrt_1m_ab = table.sqrt().float(), (1 - table).sqrt().float()  # LDM's q_sample buffers
    mask = mask.to(device=x0.device, dtype=x0.dtype)
    x = x_T.to(device=x0.device, dtype=x0.dtype) if x_T is not None else draw()
    for index, t in enumerate(scheduler.timesteps.tolist()):
        kept = sqrt_ab[t].to(x0.dtype) * x0 + sqrt_1m_ab[t].to(x0.dtype) * draw()
        x_in = kept * mask + (1.0 - mask) * x
        ts = torch.full((x0.shape[0],), t, dtype=torch.long, device=x0.device)
        eps = denoise_fn(x_in, ts)
        out = scheduler.step(eps, t, x_in, eta=0.0)
        draw()  # LDM draws the eta-noise even at eta = 0; keeps a seed's stream official
        x = out.prev_sample
        if on_step is not None:
            on_step(MaskedDDIMStep(index, t, x_in, eps, out.pred_original_sample, x))
    return x
