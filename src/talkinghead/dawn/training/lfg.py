"""Training the LFG (FlowAutoencoder, paper Sec. 3.1; dawn_spec.md §5.1): ``talkinghead train lfg``.

Per item, two frames of one clip; the LFG reconstructs the later (driving) frame from the earlier
(source) one. Loss = ``rec_weight`` x L1 pyramid of the reconstruction (on VGG19 features when
``vgg_weights`` is given, the official perceptual loss; on pixels otherwise) + ``equivariance_weight``
x (shift + affine equivariance of the region predictor under a random affine transform of the
driving frame). Augmentation: the pair is flipped horizontally and swapped in time, each with
probability 0.5 (the official ColorJitter is left out).

Not official: ``lfg_mouth_weight`` > 0 adds that weight x the mean L1 error inside the driving
frame's mouth box. Without a perceptual loss the lips are a few percent of the pixel loss and a
small LFG learns head motion long before it learns to open the mouth. ``lfg_separation_weight`` > 0
adds that weight x ``region_separation`` of the driving frame's region centres: a small LFG trained
briefly lets all its regions cover the whole face (identical regions get identical gradients and
stay together), and then nothing tracks the lips. ``lfg_mouth_region_weight`` > 0 adds that
weight x ``region_box_loss`` of region 0 against the driving frame's mouth box, so that one region
sits on the lips and its covariance follows their opening (synthetic data has the box; the trained
LFG does not need it). All three are used for the packaged demo model and are 0 by default.
``lfg_pairs="mouth"`` (synthetic sets only) draws a half-open-mouth source and a driving frame by
mouth-opening difference (``data.mouth_reference``), without the time swap.
"""

from __future__ import annotations

import logging
from pathlib import Path

import torch
from torch import Tensor, nn
from torch.utils.data import default_collate

from talkinghead.checkpoints import config_to_dict
from talkinghead.data.datasets import LFGPairDataset
from talkinghead.dawn.models.flow_autoencoder import FlowAutoencoder
from talkinghead.dawn.training.export import export_component, load_trained, write_image_rows
from talkinghead.dawn.training.losses import (
    ImagePyramid,
    RandomAffine,
    VGG19Features,
    equivariance_losses,
    mouth_mask,
    pyramid_loss,
    region_box_loss,
    region_separation,
)
from talkinghead.train.config import TrainConfig, model_config_for_data
from talkinghead.train.loop import Task, TrainResult, load_checkpoint, seeded, train

logger = logging.getLogger(__name__)

COMPONENT = "flow_ae"


class LFGObjective(nn.Module):
    """``forward(batch, generator)`` -> (loss, metrics) of one LFG batch.

    batch: ``source``, ``driving`` (B, 3, H, W) in [0, 1].
    """

    def __init__(self, lfg: FlowAutoencoder, cfg: TrainConfig, vgg: VGG19Features | None = None):
        super().__init__()
        self.lfg = lfg
        self.vgg = vgg
        self.pyramid = ImagePyramid(lfg.cfg.num_channels)
        self.rec_weight, self.eq_weight = cfg.rec_weight, cfg.equivariance_weight
        self.mouth_weight = cfg.lfg_mouth_weight
        self.separation_weight = cfg.lfg_separation_weight
        self.separation_sigma = cfg.lfg_separation_sigma
        self.mouth_region_weight = cfg.lfg_mouth_region_weight
        self.sigma = cfg.transform_sigma
        self.time_swap = cfg.lfg_pairs == "random"  # mined pairs keep the half-open source

    def forward(self, batch: dict[str, Tensor], generator: torch.Generator) -> tuple[Tensor, dict]:
        source, driving, mouth_box = augment_pair(
            batch["source"], batch["driving"], generator, batch["mouth_box"], self.time_swap
        )
        out = self.lfg(source, driving)
        regions, size = out["driving_region_params"], driving.shape[-1]
        rec = self.rec_weight * pyramid_loss(out["prediction"], driving, self.pyramid, self.vgg)
        metrics = {}
        if self.mouth_weight > 0:
            mask = mouth_mask(mouth_box[:, None], size, size)[:, :, 0]  # -> (B, 1, H, W)
            err = (out["prediction"] - driving).abs() * mask
            mouth = err.sum() / (mask.sum() * driving.shape[1]).clamp_min(1)
            rec = rec + self.mouth_weight * mouth
            metrics["mouth"] = mouth.detach()
        transform = RandomAffine(
            source.shape[0], self.sigma, generator=generator, device=driving.device
        )
        transformed = self.lfg.region_predictor(transform.transform_frame(driving))
        shift, affine = equivariance_losses(regions, transformed, transform)
        loss = rec + self.eq_weight * (shift + affine)
        if self.separation_weight > 0:
            sep = region_separation(regions["shift"], self.separation_sigma)
            loss = loss + self.separation_weight * sep
            metrics["separation"] = sep.detach()
        if self.mouth_region_weight > 0:
            box_loss = region_box_loss(
                regions["shift"][:, 0], regions["covar"][:, 0], mouth_box, size
            )
            loss = loss + self.mouth_region_weight * box_loss
            metrics["mouth_region"] = box_loss.detach()
        metrics.update(rec=rec.detach(), eq_shift=shift.detach(), eq_affine=affine.detach())
        return loss, metrics


def augment_pair(
    source: Tensor,
    driving: Tensor,
    generator: torch.Generator,
    mouth_box: Tensor,
    time_swap: bool = True,
) -> tuple[Tensor, Tensor, Tensor]:
    """Random horizontal flip (both frames alike) and time swap (if ``time_swap``) per item.

    Args:
        source, driving: (B, 3, H, W).
        mouth_box: (B, 2, 4) [x0, y0, x1, y1] pixels of source and driving.

    Returns:
        source, driving (B, 3, H, W) and the new driving frame's mouth box (B, 4).
    """
    b, width = source.shape[0], source.shape[-1]
    flip, swap = torch.rand((2, b, 1, 1, 1), generator=generator, device=source.device) < 0.5
    swap = swap & time_swap  # the draw happens either way: the flips stay those of a swap run
    source, driving = (torch.where(flip, x.flip(-1), x) for x in (source, driving))
    box = torch.where(swap[:, 0, 0], mouth_box[:, 0], mouth_box[:, 1])  # -> (B, 4)
    mirrored = torch.stack([width - box[:, 2], box[:, 1], width - box[:, 0], box[:, 3]], dim=1)
    box = torch.where(flip[:, 0, 0], mirrored, box)
    return torch.where(swap, driving, source), torch.where(swap, source, driving), box


def _vgg(path: str | None) -> VGG19Features | None:
    if path is None:
        logger.info("no --vgg-weights: reconstruction loss on pixels (L1 pyramid)")
        return None
    state = torch.load(path, map_location="cpu", weights_only=True)
    return VGG19Features.from_torchvision_state_dict(state)


def build_task(cfg: TrainConfig) -> Task:
    """LFG, objective and pair dataset of ``cfg`` (resolved)."""
    dawn, audio_kind = model_config_for_data(cfg.preset, cfg.data)
    with seeded(cfg.seed):
        lfg = FlowAutoencoder(dawn.flow_ae)
    if cfg.init_from:
        init, _ = load_trained(cfg.init_from, COMPONENT)
        state = {k: v for k, v in init.state_dict().items() if not k.endswith(".down.weight")}
        # The anti-alias kernels (``*.down.weight``) are fixed buffers built from the scales of
        # this run's config, which may differ from the initial run's (``region_scale_factor``).
        state.update({k: v for k, v in lfg.state_dict().items() if k.endswith(".down.weight")})
        lfg.load_state_dict(state)
    dataset = LFGPairDataset(
        cfg.data,
        "train",
        max_gap=cfg.max_gap,
        pairs=cfg.lfg_pairs,
        seed=cfg.seed,
        num_repeats=cfg.num_repeats,
    )
    fixed = default_collate([dataset[i] for i in range(min(4, len(dataset)))])

    def preview(ema: nn.Module, step: int, out_dir: Path) -> None:
        # rows: source, driving, reconstruction
        src, drv = fixed["source"], fixed["driving"]
        device = next(ema.parameters()).device
        pred = ema(src.to(device), drv.to(device))["prediction"]
        write_image_rows(out_dir / f"lfg_{step:07d}.png", [src, drv, pred])

    return Task(
        model=lfg,
        objective=LFGObjective(lfg, cfg, _vgg(cfg.vgg_weights)),
        dataset=dataset,
        model_config={
            "dawn": config_to_dict(dawn),
            "networks": [COMPONENT],
            "audio_features": audio_kind,
        },
        collate_fn=default_collate,
        preview=preview,
    )


def train_lfg(cfg: TrainConfig, *, resume: bool = False, hooks=()) -> TrainResult:
    """Train (or resume) the LFG described by ``cfg``; see ``loop.train``."""
    cfg = cfg.resolve()
    return train(cfg, build_task(cfg), resume=resume, hooks=hooks)


def export(run_dir: str | Path, model_dir: str | Path) -> Path:
    """Write the run's EMA LFG as ``model_dir/flow_ae`` (our model-dir format)."""
    ckpt = load_checkpoint(run_dir)
    module, cfg = load_trained(run_dir, COMPONENT)
    mc = ckpt["model_config"]
    return export_component(
        model_dir,
        COMPONENT,
        module,
        cfg,
        resolution=int(mc["dawn"]["resolution"]),
        audio_features=mc["audio_features"],
        source=f"{run_dir} step {ckpt['step']} (EMA)",
    )
