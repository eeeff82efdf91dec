"""Training the A2V-FDM denoiser (UNet3D, paper Sec. 3.2; dawn_spec.md §5.3): ``talkinghead train a2v``.

Per batch: a reference frame and a clip with its audio features, pose, eye ratios, face box and
mouth boxes. Under ``no_grad`` the frozen LFG gives the ground-truth latent of every frame relative
to the reference (region predictor on both, background motion, pixel-wise flow predictor):
``x0 = cat(flow (2), occlusion * 2 - 1)`` at ``S/4``. The condition is ``[audio, pose - pose_ref,
eye - eye_ref]`` per frame, the source is ``cat(LFG feature of the reference, face-location
embedding of its face box)``. Loss (official weights):

    eps-MSE  +  0.15 * [MSE(x0_hat flow, x0 flow) + MSE((x0_hat occ + 1) / 2, occ)]
             +  0.15 * sum(eps-MSE * mouth mask) / sum(mouth mask)

with ``x0_hat`` the dynamically thresholded prediction; the mouth mask is the clip's mouth box at
latent resolution (as the official, the numerator sums the three channels). Condition dropout
``null_cond_prob`` per clip. Curriculum: stage 1 = ``clip_frames`` (20) frames, reference = first
frame; stage 2 = a random length in ``[min_frames, clip_frames]`` (30-40) per batch, reference = a
random frame of the whole video; ``a2v_reference="open"`` (synthetic sets only) takes a random
half-open-mouth frame instead (``data.mouth_reference``; the demo model). The face-location encoder is never trained (as official): the
seed-1234 asset at 16 channels, a seeded random one for other widths; it is exported with the UNet.
Left out: the official ColorJitter on the frames and AMP fp16 (bf16 autocast is offered instead).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import torch
import torch.nn.functional as F
from einops import rearrange
from safetensors.torch import load_file
from torch import Tensor, nn
from torch.utils.data import default_collate

from talkinghead.checkpoints import config_to_dict
from talkinghead.data.datasets import A2VClipDataset
from talkinghead.dawn.configs import DawnConfig, DiffusionConfig, FaceLocConfig
from talkinghead.dawn.models.face_location import FaceLocationEncoder, bbox_mask
from talkinghead.dawn.models.flow_autoencoder import FlowAutoencoder
from talkinghead.dawn.models.unet3d import UNet3D
from talkinghead.dawn.training.export import export_component, load_trained, write_image_rows
from talkinghead.dawn.training.losses import mouth_mask
from talkinghead.diffusion.losses import predict_x0, q_sample, sample_timesteps
from talkinghead.diffusion.samplers import ddim_sample, dynamic_threshold
from talkinghead.diffusion.schedules import cosine_alphas_cumprod, ddim_timesteps
from talkinghead.model_index import has_model_index
from talkinghead.train.config import TrainConfig, model_config_for_data
from talkinghead.train.loop import Task, TrainResult, load_checkpoint, seeded, train

logger = logging.getLogger(__name__)

PER_FRAME = ("frames", "audio", "pose", "eye", "mouth_box")  # batch entries with a frame axis


class A2VNetworks(nn.Module):
    """What a checkpoint holds: the trained ``unet`` and the frozen ``face_loc`` it was trained with."""

    def __init__(self, unet: UNet3D, face_loc: FaceLocationEncoder) -> None:
        super().__init__()
        self.unet = unet
        self.face_loc = face_loc.requires_grad_(False)


def face_location_encoder(channels: int, seed: int) -> FaceLocationEncoder:
    """The official seed-1234 weights at 16 channels, else a seeded random init (never trained)."""
    from talkinghead.dawn.convert import face_loc_asset

    if channels == FaceLocConfig().out_channels:
        enc = FaceLocationEncoder()
        enc.load_state_dict(load_file(str(face_loc_asset())))
        return enc
    with seeded(seed):
        return FaceLocationEncoder(FaceLocConfig(out_channels=channels))


class A2VObjective(nn.Module):
    """``forward(batch, generator)`` -> (loss, metrics) of one A2V-FDM batch (see module doc).

    batch (``A2VClipDataset`` items): ``source (B, 3, S, S)``, ``frames (B, 3, F, S, S)``,
    ``audio (B, F, A)``, ``pose (B, F, 6)``, ``eye (B, F, 2)``, ``source_pose (B, 6)``,
    ``source_eye (B, 2)``, ``bbox (B, 6)``, ``mouth_box (B, F, 4)``.
    """

    def __init__(
        self, nets: A2VNetworks, lfg: FlowAutoencoder, cfg: TrainConfig, diffusion: DiffusionConfig
    ) -> None:
        super().__init__()
        self.nets = nets
        self.lfg = lfg.requires_grad_(False).eval()
        self.cfg, self.diffusion = cfg, diffusion
        ac = cosine_alphas_cumprod(diffusion.num_train_timesteps, diffusion.cosine_s, torch.float64)
        self.register_buffer("alphas_cumprod", ac, persistent=False)

    def train(self, mode: bool = True) -> A2VObjective:
        super().train(mode)
        self.lfg.eval()  # frozen: no BatchNorm statistics updates
        self.nets.face_loc.eval()
        return self

    @torch.no_grad()
    def ground_truth(self, source: Tensor, frames: Tensor) -> Tensor:
        """x0 ``(B, 3, F, h, w)`` = (flow x, flow y, occlusion * 2 - 1) of each frame vs ``source``."""
        b, f = frames.shape[0], frames.shape[2]
        flat = rearrange(frames, "b c f h w -> (b f) c h w")
        src = source.repeat_interleave(f, dim=0)
        src_params = {
            k: v.repeat_interleave(f, dim=0) for k, v in self.lfg.region_predictor(source).items()
        }
        motion = self.lfg.generator.pixelwise_flow_predictor(
            src, self.lfg.region_predictor(flat), src_params, self.lfg.bg_predictor(src, flat)
        )
        flow = rearrange(motion["optical_flow"], "(b f) h w c -> b c f h w", b=b)
        occ = rearrange(motion["occlusion_map"], "(b f) c h w -> b c f h w", b=b)
        return torch.cat([flow, occ * 2 - 1], dim=1)

    def source_and_cond(
        self, batch: dict[str, Tensor], face_loc: nn.Module | None = None
    ) -> tuple[Tensor, Tensor]:
        """UNet source ``(B, feat + loc, h, w)`` and condition ``(B, F, A + 6 + 2)``."""
        source, face_loc = batch["source"], face_loc or self.nets.face_loc
        with torch.no_grad():
            fea = self.lfg.compute_fea(source)
            loc = face_loc(bbox_mask(batch["bbox"], source.shape[-1]))
        cond = torch.cat(
            [
                batch["audio"],
                batch["pose"] - batch["source_pose"][:, None],
                batch["eye"] - batch["source_eye"][:, None],
            ],
            dim=-1,
        )
        return torch.cat([fea, loc], dim=1), cond

    def crop(self, batch: dict[str, Tensor], generator: torch.Generator) -> dict[str, Tensor]:
        """Stage 2: the first L frames, L ~ U{min_frames, ..., clip_frames} per batch."""
        if self.cfg.curriculum == 1:
            return batch
        n = torch.randint(
            self.cfg.min_frames,
            self.cfg.clip_frames + 1,
            (1,),
            generator=generator,
            device=generator.device,
        )
        n = int(n)
        out = dict(batch)
        out["frames"] = batch["frames"][:, :, :n]
        for key in PER_FRAME[1:]:
            out[key] = batch[key][:, :n]
        return out

    def forward(self, batch: dict[str, Tensor], generator: torch.Generator) -> tuple[Tensor, dict]:
        batch = self.crop(batch, generator)
        x0 = self.ground_truth(batch["source"], batch["frames"])
        source, cond = self.source_and_cond(batch)
        b, _, f, h, _ = x0.shape
        dev = x0.device
        t = sample_timesteps(b, self.diffusion.num_train_timesteps, generator=generator, device=dev)
        noise = torch.randn(x0.shape, generator=generator, device=dev, dtype=x0.dtype)
        x_t = q_sample(x0, t, self.alphas_cumprod, noise)
        drop = torch.rand((b, 1), generator=generator, device=dev) < self.cfg.null_cond_prob
        eps = self.nets.unet(
            x_t, t, cond, source=source, null_cond_mask=drop.expand(b, f), window=f
        )  # training attends over the whole clip (no window mask)
        err = (eps.float() - noise).pow(2)  # -> (B, 3, F, h, w)
        x0_hat = predict_x0(x_t, t, self.alphas_cumprod, eps.float())
        x0_hat = dynamic_threshold(x0_hat, self.diffusion.threshold_quantile)[0]
        flow_loss = F.mse_loss(x0_hat[:, :2], x0[:, :2]) + F.mse_loss(
            (x0_hat[:, 2:] + 1) / 2, (x0[:, 2:] + 1) / 2
        )
        mask = mouth_mask(batch["mouth_box"], batch["source"].shape[-1], h)
        mouth = (err * mask).sum() / mask.sum().clamp_min(1)
        eps_loss = err.mean()
        loss = eps_loss + self.cfg.flow_loss_weight * flow_loss + self.cfg.mouth_loss_weight * mouth
        return loss, {
            "eps": eps_loss.detach(),
            "flow": flow_loss.detach(),
            "mouth": mouth.detach(),
            "frames": torch.tensor(float(f)),
        }


def preview_samples(
    objective: A2VObjective, fixed: dict[str, Tensor], cfg: TrainConfig, steps: int, eta: float
):
    """The loop's ``preview``: ``samples/<stage>_<step>.png``, ground-truth frames above frames
    decoded from a ``steps``-step DDIM sample (``eta``) of the EMA UNet."""

    def preview(ema: nn.Module, step: int, out_dir: Path) -> None:
        dev = next(ema.parameters()).device
        batch = {k: v[:1].to(dev) for k, v in fixed.items() if isinstance(v, Tensor)}
        source, cond = objective.source_and_cond(batch, ema.face_loc)
        f = cond.shape[1]
        emb = ema.unet.precompute_source(source)
        latents = ddim_sample(
            lambda x, t: ema.unet(x, t, cond, source_emb=emb, window=f),
            (1, 3, f, *source.shape[-2:]),
            ddim_timesteps(steps),
            objective.alphas_cumprod,
            eta=eta,
            generator=torch.Generator(dev).manual_seed(cfg.seed),
            threshold_quantile=objective.diffusion.threshold_quantile,
            device=dev,
        )
        flow = rearrange(latents[0, :2], "c f h w -> f h w c")
        occ = rearrange((latents[0, 2:] + 1) / 2, "c f h w -> f c h w")
        frames = objective.lfg.decode(batch["source"], flow, occ)["prediction"]
        gt = rearrange(batch["frames"][0], "c f h w -> f c h w")
        write_image_rows(out_dir / f"{cfg.stage}_{step:07d}.png", [gt[:8], frames[:8]])

    return preview


def build_task(cfg: TrainConfig) -> Task:
    """UNet3D (+ frozen LFG and face-location encoder), objective and clip dataset of ``cfg``."""
    if cfg.lfg is None:
        raise ValueError("A2V-FDM training needs a trained LFG: pass lfg=RUN_DIR or a model dir")
    dawn, audio_kind = model_config_for_data(cfg.preset, cfg.data)
    lfg, lfg_cfg = load_trained(cfg.lfg, "flow_ae")
    feat = lfg.compute_fea(torch.zeros(1, lfg_cfg.num_channels, dawn.resolution, dawn.resolution))
    unet_cfg = replace(dawn.unet, feature_channels=feat.shape[1])
    dawn = replace(dawn, flow_ae=lfg_cfg, unet=unet_cfg)
    with seeded(cfg.seed):
        unet = UNet3D(unet_cfg)
    nets = A2VNetworks(unet, face_location_encoder(unet_cfg.face_loc_channels, 1234))
    info = {"audio_features": audio_kind, "lfg": str(cfg.lfg)}
    return clip_task(cfg, nets, lfg, dawn, info, sample_steps=cfg.sample_steps, eta=1.0)


def clip_task(
    cfg: TrainConfig,
    nets: A2VNetworks,
    lfg: FlowAutoencoder,
    dawn: DawnConfig,
    info: dict,
    *,
    sample_steps: int,
    eta: float,
    wrap: Callable[[A2VObjective], nn.Module] = lambda objective: objective,
) -> Task:
    """The ``Task`` of a stage that trains ``nets.unet`` on A2V clips (``a2v``, ``a2v-distill``).

    Args:
        nets: the networks (``init_from`` replaces their weights by that run's EMA ones, or by
            those of a model directory).
        lfg: the frozen LFG of the ground-truth latents.
        dawn: the architecture (saved with the checkpoints, with ``info``: ``audio_features``,
            ``lfg`` and what else the stage records).
        sample_steps, eta: the DDIM sampling of the previews.
        wrap: turns the ``A2VObjective`` into the stage's objective.
    """
    if cfg.init_from and has_model_index(cfg.init_from):  # an exported model dir
        for name, net in nets.named_children():
            net.load_state_dict(load_trained(cfg.init_from, name)[0].state_dict())
    elif cfg.init_from:  # a run dir / checkpoint: its EMA weights
        nets.load_state_dict(load_checkpoint(cfg.init_from)["ema"])
    dataset = clip_dataset(cfg)
    objective = A2VObjective(nets, lfg, cfg, dawn.diffusion)
    fixed = default_collate([dataset[0]])
    return Task(
        model=nets,
        objective=wrap(objective),
        dataset=dataset,
        model_config={"dawn": config_to_dict(dawn), "networks": ["unet", "face_loc"], **info},
        collate_fn=default_collate,
        preview=preview_samples(objective, fixed, cfg, sample_steps, eta),
    )


def clip_dataset(cfg: TrainConfig) -> A2VClipDataset:
    """The training clips of ``cfg``: its length, the curriculum's (or ``a2v_reference``'s)
    reference frame."""
    return A2VClipDataset(
        cfg.data,
        "train",
        num_frames=cfg.clip_frames,
        reference=cfg.a2v_reference or ("first" if cfg.curriculum == 1 else "random"),
        seed=cfg.seed,
        num_repeats=cfg.num_repeats,
    )


def train_a2v(cfg: TrainConfig, *, resume: bool = False, hooks=()) -> TrainResult:
    """Train (or resume) the A2V-FDM described by ``cfg``; see ``loop.train``."""
    cfg = cfg.resolve()
    return train(cfg, build_task(cfg), resume=resume, hooks=hooks)


def checkpoint_face_loc(ckpt: dict, channels: int) -> FaceLocationEncoder:
    """The face-location encoder an A2V checkpoint trained its UNet with (from its EMA state)."""
    sd = {
        k.removeprefix("face_loc."): v for k, v in ckpt["ema"].items() if k.startswith("face_loc.")
    }
    face_loc = FaceLocationEncoder(FaceLocConfig(out_channels=channels))
    face_loc.load_state_dict(sd)
    return face_loc


def export(run_dir: str | Path, model_dir: str | Path) -> list[Path]:
    """Write ``unet`` (EMA), ``face_loc`` and the LFG it was trained with into ``model_dir``; a
    distillation run's UNet is recorded as distilled for its student steps (``distill.py``)."""
    ckpt = load_checkpoint(run_dir)
    mc = ckpt["model_config"]
    unet, unet_cfg = load_trained(run_dir, "unet")
    face_loc = checkpoint_face_loc(ckpt, unet_cfg.face_loc_channels)
    lfg, lfg_cfg = load_trained(mc["lfg"], "flow_ae")
    common = {"resolution": int(mc["dawn"]["resolution"]), "audio_features": mc["audio_features"]}
    source = f"{run_dir} step {ckpt['step']} (EMA)"
    distilled = mc.get("distilled_steps")
    return [
        export_component(
            model_dir, "unet", unet, unet_cfg, source=source, distilled_for=distilled, **common
        ),
        export_component(
            model_dir,
            "face_loc",
            face_loc,
            FaceLocConfig(out_channels=unet_cfg.face_loc_channels),
            source=source,
            **common,
        ),
        export_component(model_dir, "flow_ae", lfg, lfg_cfg, source=str(mc["lfg"]), **common),
    ]
