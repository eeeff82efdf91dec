"""Training PBNet (PoseBlinkCVAE, paper Sec. 3.3; dawn_spec.md §5.2): ``talkinghead train pbnet``.

One run trains one net: ``net="pose"`` (6-D, min-max normalised pose) or ``net="blink"`` (2-D raw
eye ratios), as the released separate checkpoints. Per item, a window of ``clip_frames`` frames
(official 200; shorter clips whole, zero-padded with a mask); frame 0 is the reference and the
net predicts ``x - x[:, :1]``. Loss = ``rc`` (MSE on the deltas, valid frames) + ``kl_weight`` x
KL(q(z|x, audio) || N(0, I)) (official weight 0.004, constant; the official schedule, 0 for the
first 10^4 epochs and growing after 8x10^4, is not reproduced: ``init_from`` a run trained with
``kl_weight=0`` gives the warm-up by hand).

Left out, knowingly: the official ``reg`` term (it depends only on the ground truth, so it has no
gradient, spec §7 item 16) and the 1-D PatchGAN discriminator (its G and D losses were summed into
one backward in the official code); the rc + KL objective is the CVAE itself.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import Tensor, nn
from torch.utils.data import default_collate

from talkinghead.checkpoints import config_to_dict
from talkinghead.data.datasets import PBNetSequenceDataset
from talkinghead.dawn.models.pose_blink_cvae import PoseBlinkCVAE, normalize_pose
from talkinghead.dawn.training.export import export_component, load_trained
from talkinghead.train.config import TrainConfig, model_config_for_data
from talkinghead.train.loop import Task, TrainResult, load_checkpoint, seeded, train


def motion_states(batch: dict[str, Tensor], net: str) -> Tensor:
    """The states the net models: normalised pose (B, T, 6) or eye ratios (B, T, 2)."""
    return normalize_pose(batch["pose"]) if net == "pose" else batch["eye"]


def kl_divergence(mu: Tensor, logvar: Tensor, mask: Tensor) -> Tensor:
    """Official ``-0.5 * mean(1 + logvar - mu^2 - exp(logvar))`` over valid frames.

    mu, logvar: (T, B, latent); mask: (B, T) bool.
    """
    kl = -0.5 * (1 + logvar - mu.pow(2) - logvar.exp())  # -> (T, B, latent)
    valid = mask.t()[..., None].to(kl.dtype)
    return (kl * valid).sum() / (valid.sum() * kl.shape[-1]).clamp_min(1)


class PBNetObjective(nn.Module):
    """``forward(batch, generator)`` -> (loss, metrics) of one PBNet batch.

    batch: ``audio (B, T, A)``, ``pose (B, T, 6)``, ``eye (B, T, 2)``, ``mask (B, T)`` bool.
    """

    def __init__(self, net: PoseBlinkCVAE, cfg: TrainConfig) -> None:
        super().__init__()
        self.net = net
        self.which, self.kl_weight = cfg.net, cfg.kl_weight

    def forward(self, batch: dict[str, Tensor], generator: torch.Generator) -> tuple[Tensor, dict]:
        x, mask = motion_states(batch, self.which), batch["mask"]
        output, mu, logvar = self.net(x, batch["audio"], mask, generator=generator)
        target = x - x[:, :1]
        valid = mask[..., None].to(output.dtype)
        rc = ((output - target).pow(2) * valid).sum() / (valid.sum() * x.shape[-1]).clamp_min(1)
        kl = kl_divergence(mu, logvar, mask)
        return rc + self.kl_weight * kl, {"rc": rc.detach(), "kl": kl.detach()}


def build_task(cfg: TrainConfig) -> Task:
    """The pose or blink net, objective and window dataset of ``cfg`` (resolved)."""
    dawn, audio_kind = model_config_for_data(cfg.preset, cfg.data)
    with seeded(cfg.seed):
        net = PoseBlinkCVAE(getattr(dawn, cfg.net))
    if cfg.init_from:
        init, _ = load_trained(cfg.init_from, cfg.net)
        net.load_state_dict(init.state_dict())
    dataset = PBNetSequenceDataset(
        cfg.data, "train", num_frames=cfg.clip_frames, seed=cfg.seed, num_repeats=cfg.num_repeats
    )
    return Task(
        model=net,
        objective=PBNetObjective(net, cfg),
        dataset=dataset,
        model_config={
            "dawn": config_to_dict(dawn),
            "networks": [cfg.net],
            "audio_features": audio_kind,
        },
        collate_fn=default_collate,
    )


def train_pbnet(cfg: TrainConfig, *, resume: bool = False, hooks=()) -> TrainResult:
    """Train (or resume) the PBNet described by ``cfg``; see ``loop.train``."""
    cfg = cfg.resolve()
    return train(cfg, build_task(cfg), resume=resume, hooks=hooks)


def export(run_dir: str | Path, model_dir: str | Path) -> Path:
    """Write the run's EMA net as ``model_dir/pose`` or ``model_dir/blink``."""
    ckpt = load_checkpoint(run_dir)
    mc = ckpt["model_config"]
    (component,) = mc["networks"]
    module, cfg = load_trained(run_dir, component)
    return export_component(
        model_dir,
        component,
        module,
        cfg,
        resolution=int(mc["dawn"]["resolution"]),
        audio_features=mc["audio_features"],
        source=f"{run_dir} step {ckpt['step']} (EMA)",
    )
