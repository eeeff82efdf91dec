"""DDIM sampler: quantile helper, oracle recovery, determinism, and the golden replay of the official sampler
with the recorded UNet outputs (MANIFEST §3, call D: F=40, 3 steps, eta=1)."""

from __future__ import annotations

import pytest
import torch
from conftest import load_golden, max_rel_error
from torch import Tensor

from talkinghead.diffusion.samplers import (
    DDIMStep,
    ddim_sample,
    dpmpp_2m_sample,
    dynamic_threshold,
    guided,
    quantile,
)
from talkinghead.diffusion.schedules import cosine_alphas_cumprod, ddim_timesteps

SHAPE = (2, 3, 4, 8, 8)


@pytest.mark.parametrize("shape", [(1, 1), (3, 7), (2, 122880), (4, 1001)])
@pytest.mark.parametrize("q", [0.0, 0.1, 0.5, 0.9, 0.97, 1.0])
def test_quantile_equals_torch_quantile(shape: tuple[int, int], q: float) -> None:
    x = torch.randn(shape, generator=torch.Generator().manual_seed(0)).abs()
    assert torch.equal(quantile(x, q, dim=-1), torch.quantile(x, q, dim=-1))


def test_quantile_other_dim_and_float64() -> None:
    x = torch.randn(5, 33, 2, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    assert torch.equal(quantile(x, 0.9, dim=1), torch.quantile(x, 0.9, dim=1))


def test_quantile_beyond_torch_limit() -> None:
    n = 2**24 + 5  # torch.quantile refuses this size
    x = torch.randperm(n, generator=torch.Generator().manual_seed(0)).to(torch.float64)[None]
    with pytest.raises(RuntimeError):
        torch.quantile(x, 0.9, dim=-1)
    # sorted values are 0..n-1, so the linear quantile is the rank itself
    expected = torch.tensor(0.9, dtype=torch.float64) * (n - 1)
    assert quantile(x, 0.9, dim=-1).item() == expected.item()


def test_quantile_rejects_bad_q() -> None:
    with pytest.raises(ValueError):
        quantile(torch.ones(3), 1.5)


def test_dynamic_threshold() -> None:
    small = torch.full((2, 10), 0.5)
    clipped, raw = dynamic_threshold(small, 0.9)
    assert torch.equal(clipped, small) and torch.allclose(raw, torch.full((2,), 0.5))
    big = torch.linspace(-4, 4, 20).repeat(2, 1)
    clipped, raw = dynamic_threshold(big, 0.9)
    assert clipped.abs().max().item() == pytest.approx(1.0)
    assert raw.shape == (2,) and bool((raw > 1).all())


def _oracle(x0: Tensor, ab: Tensor):
    def denoise(x: Tensor, t: Tensor) -> Tensor:
        a = ab[t].view(-1, 1, 1, 1, 1).to(x.dtype)
        return (x - a.sqrt() * x0) / (1 - a).sqrt()

    return denoise


def _shrink(x: Tensor, t: Tensor) -> Tensor:
    return 0.3 * x


@pytest.mark.parametrize("faithful", [False, True])
@pytest.mark.parametrize("eta", [0.0, 1.0])
def test_oracle_denoiser_recovers_x0(faithful: bool, eta: float) -> None:
    ab = cosine_alphas_cumprod(dtype=torch.float64)
    gen = torch.Generator().manual_seed(0)
    # |x0| < 1: dynamic thresholding is a no-op
    x0 = torch.rand(SHAPE, generator=gen, dtype=torch.float64) * 1.6 - 0.8
    out = ddim_sample(
        _oracle(x0, ab),
        SHAPE,
        ddim_timesteps(10),
        ab,
        eta=eta,
        generator=gen,
        faithful=faithful,
        dtype=torch.float64,
    )
    assert (out - x0).abs().max().item() < 1e-6


@pytest.mark.parametrize("sample", [ddim_sample, dpmpp_2m_sample])
def test_same_generator_same_output_and_noise_matters(sample) -> None:
    ab = cosine_alphas_cumprod()

    def run(seed: int) -> Tensor:
        gen = torch.Generator().manual_seed(seed)
        return sample(_shrink, SHAPE, ddim_timesteps(5), ab, generator=gen)

    a, b, c = run(0), run(0), run(1)
    assert torch.equal(a, b)
    assert not torch.allclose(a, c)


def test_correct_and_faithful_modes_differ() -> None:
    ab = cosine_alphas_cumprod()
    x_T = torch.randn(SHAPE, generator=torch.Generator().manual_seed(0))
    correct = ddim_sample(_shrink, x_T, ddim_timesteps(3), ab, eta=0.0)
    faithful = ddim_sample(_shrink, x_T, ddim_timesteps(3), ab, eta=0.0, faithful=True)
    assert not torch.allclose(correct, faithful)


def test_noise_injection_count_and_errors() -> None:
    ab = cosine_alphas_cumprod()
    fn = _shrink
    draws = [torch.randn(SHAPE) for _ in range(3)]
    used = iter(draws)
    ddim_sample(fn, SHAPE, ddim_timesteps(3), ab, noise=used, faithful=True)
    assert next(used, None) is None  # x_T + one per step with t_next > 0 = 3
    with pytest.raises(ValueError, match="ran out"):
        ddim_sample(fn, SHAPE, ddim_timesteps(3), ab, noise=draws[:2], faithful=True)
    with pytest.raises(ValueError, match="shape"):
        ddim_sample(fn, SHAPE, ddim_timesteps(3), ab, noise=[torch.randn(1, 2)])
    with pytest.raises(ValueError, match="time pair"):
        ddim_sample(fn, SHAPE, [(10, 20)], ab)
    with pytest.raises(ValueError, match="time pair"):
        ddim_sample(fn, SHAPE, [(1000, 0)], ab)


def test_guided_skips_null_pass_at_scale_one() -> None:
    calls: list[str] = []

    def cond(x: Tensor, t: Tensor) -> Tensor:
        calls.append("cond")
        return x + 1

    def null(x: Tensor, t: Tensor) -> Tensor:
        calls.append("null")
        return x - 1

    x, t = torch.zeros(2), torch.zeros(1, dtype=torch.long)
    assert torch.equal(guided(cond, null, 1.0)(x, t), x + 1) and calls == ["cond"]
    calls.clear()
    assert torch.equal(guided(cond, null, 3.0)(x, t), (x - 1) + 2 * 3.0)
    assert calls == ["cond", "null"]


def test_golden_ddim_replay_with_recorded_unet_outputs() -> None:
    """Official ddim_sample, F=40, 3 steps, eta=1, with the UNet replaced by its recorded outputs."""
    io = load_golden("a2v128_reduced_io")
    calls: list[Tensor] = []

    def recorded_unet(x: Tensor, t: Tensor) -> Tensor:
        i = len(calls)
        calls.append(t)
        return io[f"D.step{i}.pred_noise"]

    steps: list[DDIMStep] = []
    noise = [io["D.random.0.randn"], io["D.random.1.randn_like"], io["D.random.2.randn_like"]]
    # a float64 schedule makes the float32 coefficients identical to the official buffers
    out = ddim_sample(
        recorded_unet,
        tuple(io["D.output"].shape),
        ddim_timesteps(3),
        cosine_alphas_cumprod(dtype=torch.float64),
        eta=1.0,
        noise=noise,
        faithful=True,
        callback=steps.append,
    )
    assert len(steps) == 3
    for s in steps:
        i = s.index
        assert torch.equal(calls[i], io[f"D.step{i}.time"])
        assert torch.equal(s.x_t, io[f"D.step{i}.x_t"])
        assert torch.equal(s.x0_unclipped, io[f"D.step{i}.x_start_unclipped"])
        assert s.threshold_raw is not None
        assert torch.equal(s.threshold_raw, io[f"D.step{i}.dynamic_thres_quantile_raw"])
    assert torch.equal(out, io["D.output"])

    # the float32 schedule (as stored in checkpoints) is within float rounding
    calls.clear()
    out32 = ddim_sample(
        recorded_unet,
        tuple(io["D.output"].shape),
        ddim_timesteps(3),
        cosine_alphas_cumprod(),
        noise=noise,
        faithful=True,
    )
    assert max_rel_error(out32, io["D.output"]) < 1e-5
