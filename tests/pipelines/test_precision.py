"""Reduced precision keeps the seed and the motion (issue #5).

* A seed gives the same random draws in every dtype: the sampler's x_T and PBNet's latents are drawn
  in float32 and cast (``torch.randn`` in bfloat16 is a different stream for most sizes).
* A bfloat16 pipeline keeps PBNet in float32 (weights never rounded, features read in float32),
  so its motion equals the float32 pipeline's bit for bit, and hands it on in bfloat16.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from torch import Tensor

from talkinghead.dawn.configs import PRESETS, GenerateOptions
from talkinghead.dawn.models.pose_blink_cvae import PoseBlinkCVAE
from talkinghead.dawn.pipeline import DawnPipeline
from talkinghead.dawn.weights import random_modules
from talkinghead.diffusion.samplers import DDIMStep, ddim_sample, seeded_randn
from talkinghead.diffusion.schedules import cosine_alphas_cumprod, ddim_timesteps
from talkinghead.face.analysis import FaceAnalyzer
from talkinghead.pipelines.base import GenerationResult

SHAPE = (1, 3, 5, 3, 3)  # 135 values: bfloat16 randn is not float32 randn rounded at this size
FAST = GenerateOptions(num_steps=1, seed=0, decode_batch=8)
LOW = (torch.bfloat16, torch.float16)


def _gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def test_low_precision_randn_is_another_stream() -> None:
    """The premise: drawing in bfloat16 directly would change the noise of a seed."""
    ref = torch.randn(SHAPE, generator=_gen()).to(torch.bfloat16)
    direct = torch.randn(SHAPE, generator=_gen(), dtype=torch.bfloat16)
    assert not torch.equal(direct, ref)


@pytest.mark.parametrize("dtype", LOW)
def test_seeded_randn_is_the_float32_draw_cast(dtype: torch.dtype) -> None:
    ref = torch.randn(SHAPE, generator=_gen())
    out = seeded_randn(SHAPE, _gen(), "cpu", dtype)
    assert out.dtype == dtype
    assert torch.equal(out, ref.to(dtype))
    assert torch.equal(seeded_randn(SHAPE, _gen(), "cpu", torch.float32), ref)


@pytest.mark.parametrize("dtype", LOW)
def test_sampler_initial_noise_same_in_every_dtype(dtype: torch.dtype) -> None:
    def first_state(dtype: torch.dtype) -> Tensor:
        seen: list[DDIMStep] = []
        ddim_sample(
            lambda x, t: torch.zeros_like(x), SHAPE, ddim_timesteps(2, 1000),
            cosine_alphas_cumprod(1000, dtype=torch.float64), generator=_gen(3), dtype=dtype,
            callback=seen.append,
        )  # fmt: skip
        return seen[0].x_t

    x32, low = first_state(torch.float32), first_state(dtype)
    assert low.dtype == dtype
    assert torch.equal(low, x32.to(dtype))


@pytest.mark.parametrize("dtype", LOW)
def test_pbnet_latents_same_in_every_dtype(dtype: torch.dtype) -> None:
    net = PoseBlinkCVAE(PRESETS["tiny"].pose).eval()
    init, audio = torch.zeros(1, 1, 6), torch.randn(1, 17, net.cfg.audio_dim, generator=_gen(1))
    drawn: list[Tensor] = []
    net.decoder.register_forward_pre_hook(lambda _m, args: drawn.append(args[2]))
    with torch.no_grad():
        net.decode(init, audio, generator=_gen(5))
        net.to(dtype).decode(init.to(dtype), audio.to(dtype), generator=_gen(5))
    assert drawn[1].dtype == dtype
    assert torch.equal(drawn[1], drawn[0].to(dtype))


def _pipeline(dtype: torch.dtype) -> DawnPipeline:
    cfg = PRESETS["tiny"]
    return DawnPipeline(
        random_modules(cfg, dtype=dtype), audio_encoder=None, config=cfg,
        face_analyzer=FaceAnalyzer(None), audio_features="logmel",
    )  # fmt: skip


def _run(
    pipe: DawnPipeline, portrait: Path, speech_wav: Path
) -> tuple[GenerationResult, dict]:
    """One call; records the dtypes PBNet computed in and the dtype of the UNet's condition."""
    seen: dict[str, torch.dtype] = {}

    def on_pbnet(_m: torch.nn.Module, _a: tuple, out: Tensor) -> None:
        seen.setdefault("pbnet_out", out.dtype)

    def on_unet(_m: torch.nn.Module, args: tuple) -> None:
        seen.setdefault("unet_cond", args[2].dtype)

    hooks = [
        pipe.modules.pose.decoder.register_forward_hook(on_pbnet),
        pipe.modules.unet.register_forward_pre_hook(on_unet),
    ]
    try:
        result = pipe(portrait, speech_wav, options=FAST)
        assert result.frames is not None
        frames = np.concatenate(list(result.frames))
    finally:
        for h in hooks:
            h.remove()
    assert frames.shape == (result.num_frames, 32, 32, 3)
    return result, seen


def test_bfloat16_pipeline_runs_pbnet_in_float32(portrait: Path, speech_wav: Path) -> None:
    low = _pipeline(torch.bfloat16)
    assert low.dtype == torch.bfloat16
    assert next(low.modules.unet.parameters()).dtype == torch.bfloat16
    for net in (low.modules.pose, low.modules.blink):
        assert {p.dtype for p in net.parameters()} == {torch.float32}

    result, seen = _run(low, portrait, speech_wav)
    assert seen == {"pbnet_out": torch.float32, "unet_cond": torch.bfloat16}
    ref, ref_seen = _run(_pipeline(torch.float32), portrait, speech_wav)
    assert ref_seen == {"pbnet_out": torch.float32, "unet_cond": torch.float32}
    # same seed, same float32 PBNet weights, features and latents: the same head motion
    np.testing.assert_array_equal(result.motion.pose, ref.motion.pose)
    np.testing.assert_array_equal(result.motion.eye, ref.motion.eye)


def test_to_and_from_pretrained_keep_pbnet_float32(tiny_model_dir: Path) -> None:
    ref = DawnPipeline.from_pretrained(tiny_model_dir)
    low = DawnPipeline.from_pretrained(tiny_model_dir, dtype=torch.float16)
    assert low.dtype == torch.float16
    assert next(low.modules.flow_ae.parameters()).dtype == torch.float16
    for name in ("pose", "blink"):
        got, want = getattr(low.modules, name), getattr(ref.modules, name)
        for (key, p), q in zip(got.state_dict().items(), want.state_dict().values(), strict=True):
            assert torch.equal(p, q), key  # float32 and never rounded through float16
    ref.to("cpu", torch.bfloat16)
    assert next(ref.modules.unet.parameters()).dtype == torch.bfloat16
    assert next(ref.modules.blink.parameters()).dtype == torch.float32


def test_autocast_leaves_audio_features_and_pbnet_in_float32(
    portrait: Path, speech_wav: Path
) -> None:
    ref, _ = _run(_pipeline(torch.float32), portrait, speech_wav)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        result, seen = _run(_pipeline(torch.float32), portrait, speech_wav)
    assert seen["pbnet_out"] == torch.float32
    np.testing.assert_array_equal(result.motion.pose, ref.motion.pose)
    np.testing.assert_array_equal(result.motion.eye, ref.motion.eye)
