"""Cosine schedule and DDIM time grid: closed forms, spec values and the official golden buffers."""

from __future__ import annotations

import itertools
import math

import pytest
import torch
from conftest import load_golden

from talkinghead.diffusion.schedules import (
    BUFFER_NAMES,
    alphas_cumprod_prev,
    cosine_alphas_cumprod,
    cosine_betas,
    ddim_timesteps,
    diffusion_buffers,
)


def _f(x: float, s: float = 0.008, T: int = 1000) -> float:
    return math.cos((x / T + s) / (1 + s) * math.pi / 2) ** 2


def test_cosine_endpoints_match_closed_form() -> None:
    ab = cosine_alphas_cumprod(dtype=torch.float64)
    assert ab.shape == (1000,)
    assert ab[0].item() == pytest.approx(_f(1) / _f(0), rel=1e-12)
    assert ab[998].item() == pytest.approx(_f(999) / _f(0), rel=1e-9)
    # f(T) = 0 would give beta = 1; the clip at 0.9999 leaves a tiny positive ᾱ_{T-1}
    assert ab[999].item() == pytest.approx(ab[998].item() * 1e-4, rel=1e-9)
    assert bool((ab[1:] < ab[:-1]).all())


def test_spec_values_at_sampled_steps() -> None:
    ab = cosine_alphas_cumprod()
    prev = alphas_cumprod_prev(ab)
    assert ab.dtype == torch.float32
    assert prev[0].item() == 1.0
    assert prev[952].item() == pytest.approx(0.005585, abs=1e-6)
    assert ab[952].item() == pytest.approx(0.005356, abs=1e-6)
    assert prev[47].item() == pytest.approx(0.992826, abs=1e-6)
    assert ab[47].item() == pytest.approx(0.992558, abs=1e-6)
    assert ab[0].item() == pytest.approx(0.99996, abs=5e-6)  # spec rounds to 5 digits
    assert ab[999].item() == pytest.approx(2.4e-10, rel=0.02)


def test_betas_clipped_and_float64() -> None:
    betas = cosine_betas()
    assert betas.dtype == torch.float64
    assert betas.max().item() == pytest.approx(0.9999)
    assert betas.min().item() > 0


def test_all_twelve_buffers_equal_golden_bit_for_bit() -> None:
    golden = load_golden("a2v128_reduced")
    ours = diffusion_buffers()
    assert tuple(ours) == BUFFER_NAMES
    for name in BUFFER_NAMES:
        assert ours[name].dtype == torch.float32
        assert torch.equal(ours[name], golden[name]), name
    assert torch.equal(cosine_alphas_cumprod(), golden["alphas_cumprod"])


def test_ddim_timesteps_official_pairs() -> None:
    assert ddim_timesteps(3) == [(750, 500), (500, 250), (250, 0)]
    grid = "952 904 857 809 761 714 666 619 571 523 476 428 380 333 285 238 190 142 95 47 0"
    expected_20 = [int(v) for v in grid.split()]
    assert ddim_timesteps(20) == list(itertools.pairwise(expected_20))
    assert ddim_timesteps(1) == [(500, 0)]


@pytest.mark.parametrize("bad", [0, -3, 1000])
def test_ddim_timesteps_rejects_bad_counts(bad: int) -> None:
    with pytest.raises(ValueError):
        ddim_timesteps(bad)


def test_alphas_cumprod_prev_rejects_2d() -> None:
    with pytest.raises(ValueError):
        alphas_cumprod_prev(torch.ones(2, 3))


def test_q_sample_predict_x0_round_trip_and_loss() -> None:
    from talkinghead.diffusion.losses import eps_mse_loss, predict_x0, q_sample, sample_timesteps

    gen = torch.Generator().manual_seed(0)
    ab = cosine_alphas_cumprod()
    x0 = torch.randn(3, 3, 2, 4, 4, generator=gen)
    noise = torch.randn(x0.shape, generator=gen)
    t = sample_timesteps(3, generator=gen)
    assert t.shape == (3,) and bool(((t >= 0) & (t < 1000)).all())
    x_t = q_sample(x0, torch.tensor([0, 500, 999]), ab, noise)
    assert torch.allclose(x_t[0], ab[0].sqrt() * x0[0] + (1 - ab[0]).sqrt() * noise[0], atol=1e-6)
    assert torch.allclose(x_t[2], noise[2], atol=1e-4)  # ᾱ_999 ≈ 2.4e-10: pure noise
    back = predict_x0(x_t, torch.tensor([0, 500, 999]), ab, noise)
    assert torch.allclose(back[:2], x0[:2], atol=1e-4)
    assert eps_mse_loss(noise, noise).item() == 0.0
    assert eps_mse_loss(noise + 1, noise).item() == pytest.approx(1.0)
    with pytest.raises(ValueError):
        q_sample(x0, torch.tensor([0, 1]), ab, noise)
