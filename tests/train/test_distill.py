"""Step distillation of the A2V-FDM (a2v-distill) on tiny synthetic data: the loss falls, the target
is exact, the export loads with its step count as the default, rounds chain."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import pytest
import torch

from talkinghead.data.layout import ClipReader
from talkinghead.dawn.configs import GenerateOptions
from talkinghead.dawn.modules import load_dawn_modules
from talkinghead.dawn.motion import Motion
from talkinghead.dawn.pipeline import DawnPipeline
from talkinghead.dawn.portrait import Portrait
from talkinghead.dawn.training import distill
from talkinghead.dawn.training.export import load_trained
from talkinghead.diffusion.distillation import progressive_grid
from talkinghead.diffusion.samplers import ddim_sample
from talkinghead.diffusion.schedules import cosine_alphas_cumprod, ddim_timesteps
from talkinghead.eval.synth_benchmark import ground_truth_face
from talkinghead.model_index import INDEX_FILE
from talkinghead.train import TrainConfig, export_run, run_stage

AB = cosine_alphas_cumprod(1000, 0.008, torch.float64)


def _cfg(stage: str, data: Path, run_dir: Path, **kw) -> TrainConfig:
    base = {"steps": 2, "batch_size": 2, "lr": 1e-3, "num_repeats": 4, "progress": False}
    base.update(log_every=1, ckpt_every=100)
    return TrainConfig(stage=stage, data=str(data), run_dir=str(run_dir), **{**base, **kw})


@pytest.fixture(scope="module")
def teacher_dir(synth_data: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A complete (barely trained) DAWN model dir: LFG, A2V-FDM, PBNet pose and blink."""
    root = tmp_path_factory.mktemp("teacher")
    run_stage(_cfg("lfg", synth_data, root / "lfg"))
    run_stage(_cfg("a2v", synth_data, root / "a2v", clip_frames=8, lfg=str(root / "lfg")))
    for net in ("pose", "blink"):
        run_stage(_cfg("pbnet", synth_data, root / net, steps=1, net=net, clip_frames=16))
    for run in ("a2v", "pose", "blink"):
        export_run(root / run, root / "model")
    return root / "model"


def test_distillation_lowers_its_loss(synth_data: Path, teacher_dir: Path, tmp_path: Path) -> None:
    cfg = _cfg(
        "a2v-distill",
        synth_data,
        tmp_path / "run",
        steps=20,
        lr=3e-3,
        clip_frames=4,
        teacher=str(teacher_dir),
        student_steps=1,
        null_cond_prob=0.0,
    )
    losses = run_stage(cfg).losses
    first, last = np.mean(losses[:5]), np.mean(losses[-5:])
    assert last < 0.8 * first, (first, last)  # 0.43 -> 0.30 when written


def test_one_student_step_reproduces_two_teacher_steps(teacher_dir: Path) -> None:
    """Student == teacher: an oracle that returns the distillation target at every step samples,
    in N steps on ddim_timesteps(N), exactly the teacher's deterministic DDIM on the 2N+1 grid
    (from the student's first time on)."""
    unet, cfg = load_trained(teacher_dir, "unet")
    gen = torch.Generator().manual_seed(0)
    b, f, n = 2, 4, 3
    cond = torch.randn(b, f, cfg.cond_dim, generator=gen)
    emb = unet.precompute_source(torch.randn(b, cfg.in_channels - 3, 8, 8, generator=gen))

    def teacher(x: torch.Tensor, t: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
        return unet(x, t, cond[items], source_emb=emb[items], window=f)

    grid = progressive_grid(n)
    index = {t: i for i, (t, _, _) in enumerate(grid)}

    def oracle(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        steps = torch.full((b,), index[int(t[0])])
        return distill.two_step_targets(teacher, x, steps, grid, AB, threshold_quantile=0.9)

    everyone = torch.ones(b, dtype=torch.bool)
    x_T = torch.randn(b, 3, f, 8, 8, generator=gen)
    with torch.no_grad():
        student = ddim_sample(oracle, x_T, ddim_timesteps(n), AB, eta=0.0, clip_x0=False)
        slow = ddim_sample(
            lambda x, t: teacher(x, t, everyone), x_T, ddim_timesteps(2 * n + 1)[1:], AB, eta=0.0
        )
    assert slow.abs().max() > 0.1  # a real trajectory, not zeros
    torch.testing.assert_close(student, slow, rtol=1e-4, atol=1e-4)


def _portrait(pipe: DawnPipeline, synth_data: Path) -> Portrait:
    clip = ClipReader(synth_data / "clips" / "000000")
    options = GenerateOptions(crop=False)
    return pipe.prepare(np.array(clip.frames[0]), options, face=ground_truth_face(clip))


def test_export_samples_its_steps_by_default(
    synth_data: Path, teacher_dir: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    run, model = tmp_path / "run", tmp_path / "model"
    kw = {"clip_frames": 8, "student_steps": 3}
    run_stage(_cfg("a2v-distill", synth_data, run, teacher=str(teacher_dir), **kw))
    export_run(run, model)
    index = json.loads((model / INDEX_FILE).read_text())
    assert index["config"]["distilled_steps"] == 3
    modules = load_dawn_modules(model)  # complete: pose and blink come from the teacher
    assert modules.distilled_steps == 3
    pipe = DawnPipeline(
        modules,
        audio_encoder=None,
        face_analyzer=None,  # type: ignore[arg-type]
        audio_features="logmel",
    )
    portrait = _portrait(pipe, synth_data)
    f = 4
    audio = torch.zeros(f, modules.unet.cfg.audio_dim)
    motion = Motion(*(np.zeros((f, d), np.float32) for d in (6, 2, 6, 2)))

    def steps_taken(options: GenerateOptions) -> int:
        seen: list[int] = []
        pipe.sample_latents(
            portrait, audio, motion, options, torch.Generator().manual_seed(0),
            callback=lambda stage, done, total: seen.append(total),
        )  # fmt: skip
        return seen[-1]

    with caplog.at_level(logging.INFO, logger="talkinghead.dawn.pipeline"):
        assert steps_taken(GenerateOptions()) == 3
    assert "distilled for 3 deterministic DDIM steps" in caplog.text
    assert steps_taken(GenerateOptions(num_steps=2)) == 2  # the caller's choice wins
    assert GenerateOptions().for_model(3) == GenerateOptions(num_steps=3, eta=0.0)
    assert GenerateOptions(eta=0.5).for_model(None) == GenerateOptions(num_steps=20, eta=0.5)

    # another round: this student teaches a (3 - 1) / 2 = 1-step student by default
    task = distill.build_task(
        _cfg("a2v-distill", synth_data, tmp_path / "r2", clip_frames=8, teacher=str(model))
    )
    assert task.objective.grid == progressive_grid(1)
    assert task.model_config["distilled_steps"] == 1
    with pytest.raises(ValueError, match="its student takes 1"):
        distill.build_task(
            _cfg("a2v-distill", synth_data, tmp_path / "r3", teacher=str(model), student_steps=2)
        )

    # a component exported later keeps the mark; an ordinary UNet written over it clears it
    export_run(teacher_dir.parent / "pose", model)
    assert load_dawn_modules(model).distilled_steps == 3
    export_run(teacher_dir.parent / "a2v", model)
    assert load_dawn_modules(model).distilled_steps is None


def test_student_steps_rules() -> None:
    assert distill.student_steps(15, None) == 15
    assert distill.student_steps(None, 15) == 7
    with pytest.raises(ValueError, match="pass student_steps"):
        distill.student_steps(None, None)
    with pytest.raises(ValueError, match="odd count"):
        distill.student_steps(None, 16)
