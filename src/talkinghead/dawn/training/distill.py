"""Step distillation of the A2V-FDM denoiser: ``talkinghead train a2v-distill``.

Progressive distillation (Salimans & Ho 2022, Alg. 2; closed forms in ``diffusion/distillation.py``):
a frozen teacher UNet (the EMA UNet of a DAWN model directory, of an ``a2v`` run or of an earlier
``a2v-distill`` run) and a student initialised from its weights. Per clip, a student step
``(t, t'')`` of ``ddim_timesteps(N)`` is drawn uniformly, ``x_t = q_sample(x0, t, eps)`` from the
clip's ground-truth latent, the teacher takes two deterministic DDIM steps ``t -> t' -> t''``
(``samplers.ddim_sample``, η = 0, dynamic thresholding, exactly as the pipeline samples) and the
student's eps target is the one whose single DDIM step lands on the teacher's result.

Data, condition and source come from ``a2v.A2VObjective`` (same clips, frozen LFG, face-location
encoder, curriculum); the LFG and the face-location encoder are the teacher's. Condition dropout
(``null_cond_prob``) drops a clip's condition for teacher and student alike, so both of the
teacher's branches are distilled; the pipeline samples the conditional one (``guidance_scale`` 1,
official), and guidance > 1 with a student is unmeasured. The A2V auxiliary losses (flow, mouth)
are left out: the student follows the teacher, not the data.

Loss: the eps-MSE per clip weighted ``max(1, 1/SNR_t)``, which is the paper's "truncated SNR"
weighting ``max(SNR_t, 1)`` of the x0 error rewritten for an eps-predicting student (the x0 error
is the eps error over ``sqrt(SNR_t)``). The paper prefers an x- or v-predicting student at few
steps; DAWN's UNet stays eps-predicting so that the pipeline and its samplers are unchanged.

Rounds: the student's grid is ``ddim_timesteps(N)``, the one the pipeline uses; the teacher's
midpoints come from ``ddim_timesteps(2N + 1)``, so a student of N steps teaches one of
``(N - 1)/2`` steps on the exact times it learned (15 -> 7 -> 3 -> 1; ``student_steps`` defaults
to that). ``export`` writes a complete model directory whose index records ``distilled_steps: N``;
the pipeline then samples N deterministic DDIM steps unless told otherwise.
"""

from __future__ import annotations

import copy
import logging
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

import torch
from torch import Tensor, nn

from talkinghead.checkpoints import config_from_dict
from talkinghead.dawn.configs import DawnConfig, DiffusionConfig
from talkinghead.dawn.models.face_location import FaceLocationEncoder
from talkinghead.dawn.models.unet3d import UNet3D
from talkinghead.dawn.modules import FAMILY, diffusion_config, distilled_steps
from talkinghead.dawn.training import a2v
from talkinghead.dawn.training.export import export_component, load_trained
from talkinghead.diffusion.distillation import (
    ddim_step_target,
    progressive_grid,
    truncated_snr_weight,
)
from talkinghead.diffusion.losses import q_sample
from talkinghead.diffusion.samplers import ddim_sample
from talkinghead.model_index import has_model_index, read_model_index
from talkinghead.train.config import TrainConfig, model_config_for_data
from talkinghead.train.loop import Task, load_checkpoint

logger = logging.getLogger(__name__)

# teacher(x (n, 3, F, h, w), t (n,), items (B,) bool) -> eps of the chosen clips
TeacherFn = Callable[[Tensor, Tensor, Tensor], Tensor]
PBNET = ("pose", "blink")


@dataclass
class Teacher:
    """A trained A2V-FDM UNet and what it was trained with."""

    unet: UNet3D  # frozen, eval mode
    face_loc: FaceLocationEncoder  # the encoder its source input was built with
    lfg: str  # its LFG: a model dir, an LFG run dir or a flow_ae component dir
    resolution: int  # frame size of the model
    audio_features: str  # "logmel" | "hubert"
    diffusion: DiffusionConfig  # its noise schedule
    distilled_steps: int | None  # the DDIM steps it was itself distilled for (None: any)


def load_teacher(path: str | Path) -> Teacher:
    """The teacher in a DAWN model directory or in an ``a2v`` / ``a2v-distill`` run dir (EMA)."""
    path = Path(path)
    unet, _ = load_trained(path, "unet")
    if has_model_index(path):
        index = read_model_index(path, FAMILY)
        face_loc, _ = load_trained(path, "face_loc")
        return Teacher(
            unet.requires_grad_(False).eval(),  # type: ignore[arg-type]
            face_loc,  # type: ignore[arg-type]
            str(path),
            int(index.config["resolution"]),
            index.audio_features,
            diffusion_config(index),
            distilled_steps(index),
        )
    ckpt = load_checkpoint(path)
    mc = ckpt["model_config"]
    dawn = config_from_dict(DawnConfig, mc["dawn"])
    return Teacher(
        unet.requires_grad_(False).eval(),  # type: ignore[arg-type]
        a2v.checkpoint_face_loc(ckpt, dawn.unet.face_loc_channels),
        str(mc["lfg"]),
        dawn.resolution,
        mc["audio_features"],
        dawn.diffusion,
        mc.get("distilled_steps"),
    )


def student_steps(requested: int | None, teacher_steps: int | None) -> int:
    """The student's DDIM steps: ``requested``, or ``(M - 1)/2`` for a teacher distilled for M.

    A distilled teacher only knows the times of its own grid, so the student must take
    ``(M - 1)/2`` steps (the grid that nests in it; ``diffusion/distillation.py``).
    """
    if teacher_steps is None:
        if requested is None:
            raise ValueError(
                "pass student_steps (e.g. 15, then 7, 3, 1): the teacher is not distilled, so "
                "it samples at any step count"
            )
        return requested
    if teacher_steps < 3 or teacher_steps % 2 == 0:
        raise ValueError(
            f"the teacher was distilled for {teacher_steps} DDIM steps; only an odd count >= 3 "
            "halves onto a grid it was trained on (distill 15 -> 7 -> 3 -> 1)"
        )
    nested = (teacher_steps - 1) // 2
    if requested not in (None, nested):
        raise ValueError(
            f"the teacher was distilled for {teacher_steps} DDIM steps, so its student takes "
            f"{nested}, not student_steps={requested}"
        )
    return nested


@torch.no_grad()
def two_step_targets(
    teacher: TeacherFn,
    x_t: Tensor,
    steps: Tensor,
    grid: list[tuple[int, int, int]],
    alphas_cumprod: Tensor,
    *,
    threshold_quantile: float | None,
    generator: torch.Generator | None = None,
) -> Tensor:
    """The student's eps target of every clip (see the module doc).

    Args:
        teacher: the frozen teacher on a subset of the clips (``TeacherFn``).
        x_t: (B, 3, F, h, w) noisy latents, clip i at time ``grid[steps[i]][0]``.
        steps: (B,) int64 index into ``grid`` of each clip's student step.
        grid: ``progressive_grid(N)``: (t, t', t'') per student step.
        alphas_cumprod: (T,) training ᾱ (float64).
        threshold_quantile: the teacher's dynamic thresholding (the pipeline's).
        generator: consumed by ``ddim_sample``'s draws (their σ is 0 at η = 0).
    Returns:
        (B, 3, F, h, w) eps~ in x_t's dtype.
    """
    out = torch.empty_like(x_t)
    ab = alphas_cumprod.to(x_t.device)
    for index in steps.unique().tolist():  # clips at the same step go through the teacher together
        items = steps == index
        t, t_mid, t_next = grid[index]
        x_next = ddim_sample(
            lambda x, tt, items=items: teacher(x, tt, items),
            x_t[items],
            [(t, t_mid), (t_mid, t_next)],
            alphas_cumprod,
            eta=0.0,
            generator=generator,
            threshold_quantile=threshold_quantile,
            land_clean=t_next == 0,  # the grid's last step ends on clean data, as in sampling
        )
        n = x_next.shape[0]
        a_next = ab.new_ones(n) if t_next == 0 else ab[t_next].expand(n)
        out[items] = ddim_step_target(x_t[items], x_next, ab[t].expand(n), a_next)
    return out


class DistillObjective(nn.Module):
    """``forward(batch, generator)`` -> (loss, metrics) of one distillation batch.

    Args:
        a2v_objective: the A2V objective over the STUDENT's networks (data, condition, source).
        teacher: the frozen teacher UNet.
        steps: N, the student's DDIM steps.
    """

    def __init__(self, a2v_objective: a2v.A2VObjective, teacher: UNet3D, steps: int) -> None:
        super().__init__()
        self.a2v = a2v_objective
        self.teacher = teacher.requires_grad_(False).eval()
        self.grid = progressive_grid(steps, a2v_objective.diffusion.num_train_timesteps)

    def train(self, mode: bool = True) -> DistillObjective:
        super().train(mode)
        self.teacher.eval()  # frozen (the A2V objective keeps its LFG in eval mode itself)
        return self

    def forward(self, batch: dict[str, Tensor], generator: torch.Generator) -> tuple[Tensor, dict]:
        obj = self.a2v
        batch = obj.crop(batch, generator)
        x0 = obj.ground_truth(batch["source"], batch["frames"])
        source, cond = obj.source_and_cond(batch)
        b, f, dev = x0.shape[0], x0.shape[2], x0.device
        steps = torch.randint(0, len(self.grid), (b,), generator=generator, device=dev)
        t = torch.tensor([g[0] for g in self.grid], device=dev)[steps]
        noise = torch.randn(x0.shape, generator=generator, device=dev, dtype=x0.dtype)
        x_t = q_sample(x0, t, obj.alphas_cumprod, noise)
        drop = torch.rand((b, 1), generator=generator, device=dev) < obj.cfg.null_cond_prob
        null = drop.expand(b, f)
        emb = self.teacher.precompute_source(source)

        def teacher(x: Tensor, tt: Tensor, items: Tensor) -> Tensor:
            return self.teacher(
                x, tt, cond[items], source_emb=emb[items], null_cond_mask=null[items], window=f
            )

        target = two_step_targets(
            teacher,
            x_t,
            steps,
            self.grid,
            obj.alphas_cumprod,
            threshold_quantile=obj.diffusion.threshold_quantile,
            generator=generator,
        )
        eps = obj.nets.unet(x_t, t, cond, source=source, null_cond_mask=null, window=f)
        err = (eps.float() - target.float()).pow(2).flatten(1).mean(1)  # -> (B,)
        a_t = obj.alphas_cumprod[t]
        loss = (truncated_snr_weight(a_t).float() * err).mean()
        x0_err = err * ((1 - a_t) / a_t).float()  # the same error on the predicted x0
        return loss, {"eps": err.mean().detach(), "x0": x0_err.mean().detach()}


def build_task(cfg: TrainConfig) -> Task:
    """Student (a copy of the teacher's UNet, trained) + frozen teacher, LFG and data of ``cfg``."""
    if cfg.teacher is None:
        raise ValueError("a2v-distill needs a teacher: pass teacher=MODEL_DIR or an a2v run dir")
    if cfg.lfg is not None:
        raise ValueError("a2v-distill uses its teacher's LFG; leave lfg unset")
    teacher = load_teacher(cfg.teacher)
    steps = student_steps(cfg.student_steps, teacher.distilled_steps)
    dawn, audio_kind = model_config_for_data(cfg.preset, cfg.data)
    unet_cfg = teacher.unet.cfg
    if (audio_kind, dawn.resolution, dawn.unet.audio_dim) != (
        teacher.audio_features,
        teacher.resolution,
        unet_cfg.audio_dim,
    ):
        raise ValueError(
            f"the data ({dawn.resolution} px, {dawn.unet.audio_dim}-d {audio_kind}) does not "
            f"match the teacher ({teacher.resolution} px, {unet_cfg.audio_dim}-d "
            f"{teacher.audio_features}); distill on the data the teacher was trained on"
        )
    lfg, lfg_cfg = load_trained(teacher.lfg, "flow_ae")
    dawn = replace(dawn, flow_ae=lfg_cfg, unet=unet_cfg, diffusion=teacher.diffusion)
    student = copy.deepcopy(teacher.unet).requires_grad_(True).train()
    nets = a2v.A2VNetworks(student, teacher.face_loc)
    logger.info("distilling %s into a %d-step student", cfg.teacher, steps)
    info = {
        "audio_features": audio_kind,
        "lfg": teacher.lfg,
        "teacher": str(cfg.teacher),
        "distilled_steps": steps,
    }
    return a2v.clip_task(
        cfg,
        nets,
        lfg,
        dawn,
        info,
        sample_steps=steps,
        eta=0.0,
        wrap=lambda objective: DistillObjective(objective, teacher.unet, steps),
    )


def _pbnet_dir(teacher: str | Path) -> Path | None:
    """The model dir whose PBNet nets the student's model dir takes: the teacher's, or its
    teacher's (a chain of distillation runs), None when no model dir is at the root."""
    teacher = Path(teacher)
    if has_model_index(teacher):
        return teacher
    mc = load_checkpoint(teacher)["model_config"]
    return _pbnet_dir(mc["teacher"]) if "teacher" in mc else None


def export(run_dir: str | Path, model_dir: str | Path) -> list[Path]:
    """A complete model directory: the student (recorded as distilled for N steps), face_loc and
    LFG (``a2v.export``), and the PBNet pose and blink nets of the teacher's model directory."""
    written = a2v.export(run_dir, model_dir)
    mc = load_checkpoint(run_dir)["model_config"]
    source = _pbnet_dir(mc["teacher"])
    if source is None:
        logger.warning(
            "no pose/blink nets at %s's root: export pbnet runs into %s", run_dir, model_dir
        )
        return written
    common = {"resolution": int(mc["dawn"]["resolution"]), "audio_features": mc["audio_features"]}
    for name in PBNET:
        if (source / name).is_dir():
            module, net_cfg = load_trained(source, name)
            written.append(
                export_component(model_dir, name, module, net_cfg, source=str(source), **common)
            )
    return written
