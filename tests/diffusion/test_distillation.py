"""Progressive distillation's closed forms: nested grids, the one-step target, the SNR weight."""

from __future__ import annotations

import pytest
import torch

from talkinghead.diffusion.distillation import (
    ddim_step_target,
    progressive_grid,
    truncated_snr_weight,
)
from talkinghead.diffusion.samplers import ddim_sample
from talkinghead.diffusion.schedules import cosine_alphas_cumprod, ddim_timesteps

AB = cosine_alphas_cumprod(1000, 0.008, torch.float64)


@pytest.mark.parametrize("n", [1, 3, 7, 15, 31, 10, 50])
def test_student_grid_is_ddim_timesteps_and_nests_in_the_teachers(n: int) -> None:
    grid = progressive_grid(n)
    assert [(t, t2) for t, _, t2 in grid] == ddim_timesteps(n)
    teacher = ddim_timesteps(2 * n + 1)
    assert [p for t, mid, t2 in grid for p in ((t, mid), (mid, t2))] == teacher[1:]


@pytest.mark.parametrize("t, t_next", [(750, 500), (250, 0), (968, 937)])
def test_one_ddim_step_with_the_target_lands_on_x_next(t: int, t_next: int) -> None:
    gen = torch.Generator().manual_seed(0)
    x_t, x_next = (
        torch.randn(2, 3, 4, 5, 5, generator=gen),
        torch.randn(2, 3, 4, 5, 5, generator=gen),
    )
    a_next = torch.ones(2, dtype=torch.float64) if t_next == 0 else AB[t_next].expand(2)
    eps = ddim_step_target(x_t, x_next, AB[t].expand(2), a_next)
    landed = ddim_sample(
        lambda x, tt: eps,
        x_t,
        [(t, t_next)],
        AB,
        eta=0.0,
        clip_x0=False,
        land_clean=t_next == 0,
    )
    torch.testing.assert_close(landed, x_next, rtol=1e-5, atol=1e-5)


def test_a_segment_stops_at_its_noise_level() -> None:
    """land_clean=False: two steps of a longer grid equal the first two steps of the whole run."""

    def shrink(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        return 0.5 * x

    x_T = torch.randn(1, 3, 2, 4, 4, generator=torch.Generator().manual_seed(1))
    grid = ddim_timesteps(5)
    seen: list[torch.Tensor] = []
    ddim_sample(shrink, x_T, grid, AB, eta=0.0, callback=lambda s: seen.append(s.x_next))
    part = ddim_sample(shrink, x_T, grid[:2], AB, eta=0.0, land_clean=False)
    torch.testing.assert_close(part, seen[1])
    clean = ddim_sample(shrink, x_T, grid[:2], AB, eta=0.0)  # the default lands on clean data
    assert not torch.allclose(clean, seen[1])


def test_truncated_snr_weight() -> None:
    a = torch.tensor([0.5, 0.9, 0.1], dtype=torch.float64)
    torch.testing.assert_close(truncated_snr_weight(a), torch.tensor([1.0, 1.0, 9.0]).double())
