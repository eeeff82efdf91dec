"""The fewer-step samplers against the official ancestral one where their definitions meet.

* DDIM with eta = 1 on the respaced ᾱ adds the posterior variance β̃ to the posterior mean of the
  clamped x̂0: that is the ancestral step whose learned variance sits at its lower end (v = −1), so with
  the same draws both give the same frame.
* DPM-Solver++(2M) takes first-order steps first and last; with 2 steps it is DDIM (eta = 0).
* Both fewer-step samplers are deterministic: the frame depends on x_T only.
* A v-predicting model goes through every sampler by its eps (``diffusion/prediction.py``).
"""

from __future__ import annotations

import pytest
import torch

from talkinghead.diffused_heads.configs import DiffusedHeadsDiffusionConfig
from talkinghead.diffused_heads.sampling import (
    ancestral_sampler,
    ddim_sampler,
    dpmpp_sampler,
    frame_sampler,
)
from talkinghead.diffusion.ddim_eps import ddim_eps_sample
from talkinghead.diffusion.prediction import eps_from_v, v_target
from talkinghead.diffusion.respacing import respaced_schedule, space_timesteps, training_schedule

T = 1000


def smooth_denoiser(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """A deterministic, t-dependent eps ‖ v (v = −1: the variance at its lower end, β̃)."""
    eps = torch.tanh(x + 1e-3 * t.view(-1, 1, 1, 1)) * 0.9
    return torch.cat([eps, -torch.ones_like(eps)], dim=1)


def draws(seed: int):
    g = torch.Generator().manual_seed(seed)
    return lambda shape: torch.randn(shape, generator=g)


@pytest.mark.parametrize("steps", [7, 10, 25])
def test_ddim_eta1_is_the_ancestral_sampler_at_the_lower_variance(steps: int) -> None:
    schedule = respaced_schedule(steps)
    kept = schedule.timesteps.tolist()
    alpha_bar = torch.ones(T, dtype=torch.float64)
    alpha_bar[kept] = schedule.alpha_bar.double()  # the same (float32-respaced) ᾱ at the kept steps
    x_T = torch.randn(2, 3, 8, 8, generator=torch.Generator().manual_seed(0))
    ancestral = ancestral_sampler(schedule)(smooth_denoiser, x_T, draws(1), None)
    ddim = ddim_eps_sample(smooth_denoiser, x_T, kept, alpha_bar, eta=1.0, noise=draws(1))
    torch.testing.assert_close(ddim, ancestral, atol=2e-5, rtol=0)
    other = ancestral_sampler(schedule)(smooth_denoiser, x_T, draws(2), None)
    assert (
        other - ancestral
    ).abs().max() > 1e-2  # the draws matter, so the agreement means something


def test_dpmpp_with_two_steps_is_ddim() -> None:
    alpha_bar = training_schedule(T).alpha_bar.double()
    kept = space_timesteps(T, 2)
    x_T = torch.randn(1, 3, 8, 8, generator=torch.Generator().manual_seed(0))
    ddim = ddim_sampler(kept, alpha_bar)(smooth_denoiser, x_T, None, None)
    dpmpp = dpmpp_sampler(kept, alpha_bar)(smooth_denoiser, x_T, None, None)
    torch.testing.assert_close(dpmpp, ddim, atol=1e-5, rtol=0)
    kept = space_timesteps(T, 10)  # second-order steps in between: another path to x0
    ddim = ddim_sampler(kept, alpha_bar)(smooth_denoiser, x_T, None, None)
    dpmpp = dpmpp_sampler(kept, alpha_bar)(smooth_denoiser, x_T, None, None)
    assert (dpmpp - ddim).abs().max() > 1e-3


@pytest.mark.parametrize("build", [ddim_sampler, dpmpp_sampler])
def test_fewer_step_samplers_are_deterministic_and_recover_x0(build) -> None:
    alpha_bar = training_schedule(T).alpha_bar.double()
    x0 = torch.rand(1, 3, 8, 8) * 1.6 - 0.8

    def oracle(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        a = alpha_bar[t[0]]
        eps = (x - a.sqrt() * x0) / (1 - a).sqrt()
        return torch.cat([eps, torch.full_like(eps, 7.0)], dim=1)  # v is ignored

    sample = build(space_timesteps(T, 5), alpha_bar)
    x_T = torch.randn(1, 3, 8, 8, generator=torch.Generator().manual_seed(0))
    calls = []
    out = sample(oracle, x_T, None, lambda done, total: calls.append((done, total)))
    assert calls == [(i, 5) for i in range(1, 6)]  # one network call per step
    torch.testing.assert_close(out, x0.float(), atol=1e-5, rtol=0)
    assert torch.equal(
        sample(smooth_denoiser, x_T, None, None), sample(smooth_denoiser, x_T, None, None)
    )


def oracle_of(x0: torch.Tensor, prediction: str, seen: list[torch.Tensor]):
    """The exact eps or v (‖ ν = −1) of a known x0 at every (x_t, t); ``seen`` collects each x_t."""
    alpha_bar = training_schedule(T).alpha_bar

    def oracle(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        seen.append(x.clone())
        a = alpha_bar[t].view(-1, 1, 1, 1).double()
        if prediction == "v":
            out = (a.sqrt() * x.double() - x0) / (1 - a).sqrt()
        else:
            out = (x.double() - a.sqrt() * x0) / (1 - a).sqrt()
        return torch.cat([out.float(), -torch.ones_like(x)], dim=1)

    return oracle


@pytest.mark.parametrize("name", ["ancestral", "ddim", "dpmpp-2m"])
def test_every_sampler_reads_a_v_predicting_network(name: str) -> None:
    """A v-oracle of a model marked "v" walks the eps-oracle's path (same draws) and ends at x0; marked
    "eps", it walks elsewhere (the last step, at ᾱ ≈ 1, recovers x0 either way, so the path tells)."""
    x0 = torch.rand(1, 3, 8, 8, generator=torch.Generator().manual_seed(3)) * 1.6 - 0.8
    x_T = torch.randn(1, 3, 8, 8, generator=torch.Generator().manual_seed(0))
    paths, ends = {}, {}
    for truth, marked in (("eps", "eps"), ("v", "v"), ("v", "eps")):
        seen: list[torch.Tensor] = []
        sampler = frame_sampler(name, 10, DiffusedHeadsDiffusionConfig(prediction=marked))
        ends[truth, marked] = sampler(oracle_of(x0, truth, seen), x_T, draws(1), None)
        paths[truth, marked] = torch.stack(seen)
    reference = paths["eps", "eps"]
    torch.testing.assert_close(ends["v", "v"], x0, atol=1e-4, rtol=0)
    torch.testing.assert_close(paths["v", "v"], reference, atol=1e-3, rtol=0)
    assert (paths["v", "eps"] - reference).abs().max() > 0.1


def test_v_and_eps_convert_both_ways() -> None:
    g = torch.Generator().manual_seed(0)
    x0, eps = torch.randn(4, 3, 5, 5, generator=g), torch.randn(4, 3, 5, 5, generator=g)
    alpha_bar = torch.tensor([0.999, 0.5, 1e-3, 2.4e-9])
    x_t = alpha_bar.sqrt().view(-1, 1, 1, 1) * x0 + (1 - alpha_bar).sqrt().view(-1, 1, 1, 1) * eps
    v = v_target(x0, eps, alpha_bar)
    torch.testing.assert_close(eps_from_v(v, x_t, alpha_bar), eps, atol=1e-6, rtol=0)
    with pytest.raises(ValueError, match="prediction='x0' must be one of eps, v"):
        DiffusedHeadsDiffusionConfig(prediction="x0")
