"""Parity with the official Diffused Heads code (../shared/golden/diffusedheads, see its MANIFEST.md).

The golden UNet weights go through our converter (``diffused_heads.convert``) into a model directory and
are loaded back with ``checkpoints.load_component``; every recorded tensor is reproduced.

Tolerances, and why:

* schedules, kept timesteps, audio windows, the recorded random draws, the sinusoid and the time / audio
  embeddings, the sampler update from recorded (x_t, eps ‖ v, z): **bitwise** or 1e-6 (pure float32
  element-wise maths in the official op order; nothing here depends on a convolution kernel).
* UNet outputs and internals: **atol 2e-3** on values up to 26. The very first convolution (a 108-term
  sum) already differs from the recording by ~1e-6 on this machine, because the CPU's oneDNN kernels
  accumulate in another order than on the recording machine; the peaky attention (qkv x 3) amplifies
  that to ~3e-4 at the attention output and ≤ 8e-4 at the output. The MANIFEST measured ≤ 2e-4 between
  1 and 2 threads on one machine; different CPUs sit a few times above that. ``test_tolerance_discriminates``
  shows that a real mistake (motion frames swapped) moves the output ~100x more than this tolerance.
* ``SL.output`` (the whole 4-frame, 10-step run with the network scaled by 0.005, a contracting map):
  **atol 1e-3** end to end, as the MANIFEST recommends (we land at ~2e-5).
* ``S.output`` is chaotic with these random weights (x̂0 coefficients of 23796 at t = 999 amplify 1e-5 to
  0.24, see the MANIFEST), so it is checked piecewise: every UNet call of frame 0 and the first call of
  frames 1-3 from the recorded inputs (atol 2e-3), every sampler update from the recorded tensors
  (bitwise), and the last update of frame 0 equals ``S.output[:, 0]`` (bitwise).
"""

from __future__ import annotations

import pytest
import torch
from safetensors.torch import load_file

from talkinghead import checkpoints
from talkinghead.diffused_heads.convert import convert
from talkinghead.diffused_heads.sampling import (
    OfficialNoise,
    ancestral_sampler,
    audio_window,
    generate_frames,
)
from talkinghead.diffused_heads.unet import timestep_sinusoid
from talkinghead.diffusion.ancestral import learned_range_step
from talkinghead.diffusion.respacing import (
    q_sample,
    respaced_schedule,
    space_timesteps,
    training_schedule,
)

# Bitwise on the machine the golden files were recorded on. Elsewhere the float32 sqrt/divide kernels
# of MKL's vector math differ in the last bit (seen on an AVX-512 Xeon: 1-2 ulp on the schedule
# coefficients, 4.2e-5 on a sampler update, 2.4e-4 on the first x0 estimate).
SCHEDULE_RTOL = 4 * 2.0**-23
UPDATE_ATOL = 1e-4

pytestmark = pytest.mark.slow

UNET_ATOL = 2e-3
SL_ATOL = 1e-3


@pytest.fixture(scope="module")
def io(golden_dir):
    # cloned: un-cloned safetensors buffers can take another GEMM path (MANIFEST, replay caveat)
    tensors = load_file(str(golden_dir / "diffusedheads" / "dh_unet_reduced_io.safetensors"))
    return {k: v.clone() for k, v in tensors.items()}


@pytest.fixture(scope="module")
def unet(golden_dir, tmp_path_factory):
    out = convert(
        golden_dir / "diffusedheads" / "dh_unet_reduced.safetensors",
        tmp_path_factory.mktemp("dh") / "model",
    )
    return checkpoints.load_component(out / "unet")


def call(unet, io, prefix):
    with torch.no_grad():
        return unet(
            io[f"{prefix}.input.x_t"],
            io[f"{prefix}.input.timesteps"],
            io[f"{prefix}.input.x_cond"],
            io[f"{prefix}.input.motion_frames"],
            io[f"{prefix}.input.audio_emb"],
        )


def max_err(a, b) -> float:
    return (a.double() - b.double()).abs().max().item()


@pytest.mark.parametrize("name,steps", [("T1000", None), ("S10", 10), ("S100", 100)])
def test_schedules_bitwise(io, name, steps):
    sched = training_schedule() if steps is None else respaced_schedule(steps)
    keys = [k for k in io if k.startswith(f"schedule.{name}.")]
    assert len(keys) >= 11
    for key in keys:  # bitwise on the recording machine; a few ulp elsewhere (SCHEDULE_RTOL)
        torch.testing.assert_close(
            getattr(sched, key.rsplit(".", 1)[1]), io[key], rtol=SCHEDULE_RTOL, atol=0, msg=key
        )


def test_kept_timesteps(io):
    assert space_timesteps(1000, 200) == io["schedule.S200.timesteps"].tolist()
    assert space_timesteps(1000, 7) == [0, 166, 333, 500, 666, 832, 999]  # round half to even
    assert io["S.timesteps"].tolist() == space_timesteps(1000, 10)


@pytest.mark.parametrize("prefix", ["U1", "U2"])
def test_embeddings(unet, io, prefix):
    t, audio = io[f"{prefix}.input.timesteps"], io[f"{prefix}.input.audio_emb"]
    with torch.no_grad():
        t_emb, a_emb = unet.embed(t, audio, torch.float32)
    assert max_err(timestep_sinusoid(t, 32), io[f"{prefix}.internal.time_embed.sinusoid"]) <= 1e-6
    assert max_err(t_emb, io[f"{prefix}.internal.time_embed"]) <= 1e-6
    assert max_err(a_emb, io[f"{prefix}.internal.audio_embed"]) <= 1e-6


def test_forward_diffusion(io):
    """The training q-sample reproduces the recorded x_t of U2 from its recorded eps."""
    x_cond = io["U2.input.x_cond"]
    x0 = torch.cat([x_cond[..., 1:], x_cond[..., -1:]], dim=-1)  # hshift(x_cond, -1)
    x_t = q_sample(training_schedule(), x0, io["U2.input.timesteps"], io["U2.input.eps"])
    assert max_err(x_t, io["U2.input.x_t"]) <= 1e-6


@pytest.mark.parametrize("prefix", ["U1", "U2"])
def test_unet_output(unet, io, prefix):
    assert max_err(call(unet, io, prefix), io[f"{prefix}.output"]) <= UNET_ATOL


def test_unet_internals(unet, io):
    recorded: dict[str, torch.Tensor] = {}

    def keep(name, value):  # a forward hook that returns a value would replace the module's output
        recorded.setdefault(name, value)

    names = [
        "input_blocks.0",
        "input_blocks.3",
        "input_blocks.7",
        "input_blocks.7.0",
        "middle_block",
        "output_blocks.0",
    ]
    hooks = [
        unet.get_submodule(n).register_forward_hook(lambda m, i, o, n=n: keep(n, o)) for n in names
    ]
    attn = unet.get_submodule("input_blocks.7.1")
    hooks.append(
        attn.proj_out.register_forward_hook(
            lambda m, i, o: keep("input_blocks.7.1.attention", i[0])
        )
    )
    try:
        call(unet, io, "U1")
    finally:
        for h in hooks:
            h.remove()
    assert len(recorded) == 7
    for name, value in recorded.items():
        assert max_err(value, io[f"U1.internal.{name}"]) <= UNET_ATOL, name


def test_tolerance_discriminates(unet, io):
    """Swapping the two motion frames (a plausible bug) moves U1's output far beyond the tolerance."""
    swapped = dict(io)
    motion = io["U1.input.motion_frames"]
    swapped["U1.input.motion_frames"] = torch.cat([motion[:, 3:], motion[:, :3]], dim=1)
    assert max_err(call(unet, swapped, "U1"), io["U1.output"]) > 50 * UNET_ATOL


def test_audio_windows(io):
    assert [audio_window(f, 4, 2) for f in range(4)] == io["S.audio_ids"].tolist()
    assert audio_window(0, 1, 2) == [0] * 5  # the official raises IndexError for F <= 2; we clamp


def test_official_draw_order(io):
    noise = OfficialNoise(5004, 4, (1, 3, 128, 128))
    for f in range(4):
        assert torch.equal(noise.initial(f), io["S.random.xT"][:, f])
    for f in range(4):
        for j in range(9):
            assert torch.equal(noise.step(torch.Size((1, 3, 128, 128))), io["S.random.z"][f, j])


def test_sampler_updates_bitwise(io):
    """Every update of frame 0 from the recorded (x_t, eps ‖ v, z); the last one gives S.output[:, 0]."""
    sched = respaced_schedule(10)
    x_t, nn_out, z = io["S.frame0.x_t"], io["S.frame0.nn_out"], io["S.random.z"][0]
    for j in range(10):
        k = 9 - j
        x_next, x0 = learned_range_step(x_t[j], nn_out[j], k, sched, z[j] if k > 0 else None)
        if j == 0:  # x0 = 2.4e4 x_t - ...: a 1-ulp coefficient moves it by up to 3e-4
            torch.testing.assert_close(x0, io["S.frame0.x0_pred_first_step"], rtol=0, atol=1e-3)
        expected = x_t[j + 1] if j < 9 else io["S.output"][:, 0]
        torch.testing.assert_close(x_next, expected, rtol=0, atol=UPDATE_ATOL, msg=f"step {j}")


def test_sampling_run_unet_calls(unet, io):
    """The UNet calls of the S run from the recorded inputs: all 10 steps of frame 0, then the first
    step of frames 1-3 with the recorded previous output frames as motion frames."""
    sched, x_cond, audio = respaced_schedule(10), io["S.input.x_cond"], io["S.input.audio_emb"]
    out = io["S.output"]
    with torch.no_grad():
        for j in range(10):
            t = sched.timesteps[9 - j].reshape(1)
            pred = unet(
                io["S.frame0.x_t"][j],
                t,
                x_cond,
                torch.cat([x_cond, x_cond], 1),
                audio[:, audio_window(0, 4, 2)],
            )
            assert max_err(pred, io["S.frame0.nn_out"][j]) <= UNET_ATOL, f"frame 0 step {j}"
        for f in range(1, 4):
            prev = [out[:, i] if i >= 0 else x_cond for i in (f - 2, f - 1)]
            pred = unet(
                io["S.random.xT"][:, f],
                torch.tensor([999]),
                x_cond,
                torch.cat(prev, 1),
                audio[:, audio_window(f, 4, 2)],
            )
            assert max_err(pred, io[f"S.frame{f}.first_step.nn_out"]) <= UNET_ATOL, f"frame {f}"


def scaled_run(unet, io, **kwargs) -> torch.Tensor:
    """SL: the whole official sample() call (seed 5004, 4 frames, 10 steps) with out.2 scaled by
    0.005 -> (1, 4, 3, 128, 128); ``kwargs`` go to ``generate_frames``."""
    scaled = checkpoints.build_and_load(
        unet.cfg, {k: v.clone() for k, v in unet.state_dict().items()}
    )
    with torch.no_grad():
        scaled.out[2].weight.mul_(0.005)
        scaled.out[2].bias.mul_(0.005)
    frames = generate_frames(
        scaled,
        io["S.input.x_cond"],
        io["S.input.audio_emb"],
        ancestral_sampler(respaced_schedule(10)),
        OfficialNoise(5004, 4, (1, 3, 128, 128)),
        **kwargs,
    )
    return torch.stack(list(frames), dim=1)


def test_scaled_run_end_to_end(unet, io):
    assert max_err(scaled_run(unet, io), io["SL.output"]) <= SL_ATOL
