"""The fast inference path (``fast_unet.FastUNet``) against ``DiffusedHeadsUNet.forward`` and the golden
recordings; several clips batched against one by one.

Tolerances: on random tiny networks the two paths differ by float32 rounding only (≤ 1e-5 on outputs
of size ~1-5); sampling several frames from them, batched or one by one (the GEMMs block a batch
differently), ≤ 1e-4 (measured ≤ 3e-5). On the golden weights, whose peaky attention amplifies rounding (test_golden.py's
docstring), the fast path is held to the same 2e-3 as the official recordings, and the well-conditioned
``SL`` run end to end to 2e-4 against the official op order (measured ~5e-5) and 1e-3 against the
recording.
"""

from __future__ import annotations

import gc
import weakref

import pytest
import torch
from torch.profiler import ProfilerActivity, profile

from talkinghead.diffused_heads.configs import PRESETS
from talkinghead.diffused_heads.fast_unet import FastUNet
from talkinghead.diffused_heads.sampling import (
    BatchNoise,
    OfficialNoise,
    ancestral_sampler,
    generate_frames,
)
from talkinghead.diffused_heads.unet import AttentionBlock
from talkinghead.diffusion.respacing import respaced_schedule

from .test_golden import (  # noqa: F401 (fixtures)
    SL_ATOL,
    UNET_ATOL,
    call,
    io,
    max_err,
    scaled_run,
    unet,
)
from .tiny import WIDE, random_unet

FLASH = "aten::_scaled_dot_product_flash_attention_for_cpu"
MATH = "aten::_scaled_dot_product_attention_math"
CONFIGS = {"tiny": PRESETS["tiny"].unet, "wide": WIDE}


def _inputs(cfg, batch: int, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    s, n = cfg.image_size, cfg.n_motion_frames * cfg.motion_channels
    return (
        torch.randn(batch, 3, s, s, generator=g),
        torch.randint(0, 1000, (1,), generator=g).expand(batch),
        torch.rand(batch, 3, s, s, generator=g) * 2 - 1,
        torch.rand(batch, n, s, s, generator=g) * 2 - 1,
        torch.randn(batch, cfg.audio_window, cfg.audio_dim, generator=g),
    )


def _fast(net, x_t, t, x_cond, motion, audio):
    fast = FastUNet.of(net)
    return fast(x_t, t, fast.condition(x_cond, motion, audio))


@pytest.fixture(scope="module", params=sorted(CONFIGS))
def net(request):
    return random_unet(CONFIGS[request.param])


@pytest.mark.parametrize("batch", [1, 2])  # the GroupNorm-affine and the addcmul FiLM branches
def test_fast_path_equals_forward(net, batch):
    args = _inputs(net.cfg, batch)
    with torch.no_grad():
        ref = net(*args)
        out = _fast(net, *args)
    assert out.shape == ref.shape and out.is_contiguous()
    assert max_err(out, ref) <= 1e-5 * max(1.0, ref.abs().max().item())


def test_layout_and_winograd_follow_the_width():
    nets = random_unet(CONFIGS["tiny"]), random_unet(WIDE)
    tiny, wide = (FastUNet(net) for net in nets)
    assert not tiny.winograd and tiny.memory_format == torch.contiguous_format
    wide_convs = [
        m
        for m in nets[1].modules()
        if isinstance(m, torch.nn.Conv2d)
        and m.kernel_size == (3, 3)
        and min(m.in_channels, m.out_channels) >= 128
    ]
    assert wide_convs and wide.winograd == set(wide_convs)
    assert wide.memory_format == torch.channels_last


def test_attention_runs_the_flash_kernel(net):
    args = _inputs(net.cfg, 2)
    with torch.no_grad(), profile(activities=[ProfilerActivity.CPU]) as prof:
        _fast(net, *args)
    names = [e.name for e in prof.events()]
    blocks = sum(isinstance(m, AttentionBlock) for m in net.modules())
    assert blocks and names.count(FLASH) == blocks and names.count(MATH) == 0


def test_cache_does_not_keep_a_network_alive():
    net = random_unet(CONFIGS["tiny"])
    fast, alive = FastUNet.of(net), weakref.ref(net)
    del net
    gc.collect()
    assert alive() is None
    with pytest.raises(RuntimeError, match="deleted"):
        fast.unet  # noqa: B018


def test_rebuilt_when_a_parameter_changes():
    net = random_unet(CONFIGS["tiny"])
    first = FastUNet.of(net)
    assert FastUNet.of(net) is first
    with torch.no_grad():
        net.input_blocks[0][0].weight.mul_(2)
    assert FastUNet.of(net) is not first
    args = _inputs(net.cfg, 1)
    with torch.no_grad():
        assert max_err(_fast(net, *args), net(*args)) <= 1e-5


@pytest.mark.parametrize("width", sorted(CONFIGS))
def test_batched_clips_equal_one_by_one(width):
    # the output layer scaled as in the golden SL run, and the official (ancestral) sampler: unscaled
    # random weights, or the deterministic samplers' x0 extrapolation from t = 999, make sampling
    # chaotic (x0 saturates at ±1 and rounding differences between batch sizes grow without bound)
    net = random_unet(CONFIGS[width])
    with torch.no_grad():
        net.out[2].weight.mul_(0.005)
        net.out[2].bias.mul_(0.005)
    cfg, frames, seeds = net.cfg, 3, (3, 8)
    _, _, x_cond, _, _ = _inputs(cfg, 2, seed=1)
    audio = torch.randn(2, frames, cfg.audio_dim, generator=torch.Generator().manual_seed(2))
    draw = ancestral_sampler(respaced_schedule(7))

    def run(x, a, noise):
        return torch.stack(list(generate_frames(net, x, a, draw, noise, stabilize_every=2)), 1)

    shape = (1, 3, cfg.image_size, cfg.image_size)
    batched = run(x_cond, audio, BatchNoise([OfficialNoise(s, frames, shape) for s in seeds]))
    for b, seed in enumerate(seeds):
        alone = run(x_cond[b : b + 1], audio[b : b + 1], OfficialNoise(seed, frames, shape))
        assert max_err(batched[b : b + 1], alone) <= 1e-4, b
    assert max_err(batched[:1], batched[1:]) > 0.01  # the clips differ


def test_batch_sizes_must_agree(net):
    cfg = net.cfg
    x_cond = torch.zeros(2, 3, cfg.image_size, cfg.image_size)
    frames = generate_frames(
        net,
        x_cond,
        torch.zeros(1, 3, cfg.audio_dim),
        ancestral_sampler(respaced_schedule(7)),
        OfficialNoise(0, 3, (1, 3, cfg.image_size, cfg.image_size)),
    )
    with pytest.raises(ValueError, match="one per clip"):
        next(frames)


# -- the golden weights (../shared/golden/diffusedheads) ----------------------------------------------


@pytest.mark.slow
@pytest.mark.parametrize("prefix", ["U1", "U2"])
def test_golden_unet_calls(unet, io, prefix):  # noqa: F811
    args = [io[f"{prefix}.input.{n}"] for n in ("x_t", "timesteps", "x_cond", "motion_frames")]
    with torch.no_grad():
        out = _fast(unet, *args, io[f"{prefix}.input.audio_emb"])
    assert max_err(out, io[f"{prefix}.output"]) <= UNET_ATOL
    assert max_err(out, call(unet, io, prefix)) <= UNET_ATOL


@pytest.mark.slow
def test_golden_scaled_run_both_paths(unet, io):  # noqa: F811
    """SL end to end: the fast path and the official op order, against the recording and each other."""
    runs = {}
    for official_order in (True, False):
        runs[official_order] = scaled_run(unet, io, official_order=official_order)
        assert max_err(runs[official_order], io["SL.output"]) <= SL_ATOL
    assert max_err(runs[True], runs[False]) <= 2e-4
