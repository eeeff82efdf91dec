"""Training DiffTalk's first stage, a VQ autoencoder of the vq-f4 architecture, on a prepared set.

DiffTalk never trains its first stage: it uses LDM's public ``vq-f4`` (spec §2.4). Where that
checkpoint cannot be had (the synthetic set, a machine without downloads), this stage trains one of
the same architecture (diffusers ``VQModel``, ``DiffTalkVQConfig`` of the preset) on the set's
frames, so ``talkinghead train difftalk --first-stage`` has something to encode with.

Objective (not official; LDM/taming train vq-f4 with L1 + LPIPS + codebook loss + a patch GAN):
``|x - decode(quantise(encode(x)))|_1`` plus the codebook and commitment terms of diffusers'
legacy ``VectorQuantizer`` (beta 0.25). On the flat-coloured synthetic faces this suffices and
needs no extra networks. The codebook starts from encoder outputs of a batch of training frames
(seeded) instead of diffusers' tiny uniform init, which would leave most codes unused. The logged
``codes_used`` is the share of the codebook a batch uses.

Items: one frame, resized to the preset's ``image_size`` (``cv2.INTER_AREA``, as the denoiser's
latent cache does), in [-1, 1]. Export: the raw weights (LDM trains its autoencoders without
EMA) into ``MODEL_DIR/first_stage/``, which ``TrainConfig.first_stage`` accepts.
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import torch
from torch import Tensor, nn
from torch.utils.data import Dataset, default_collate

from talkinghead import checkpoints
from talkinghead.data.layout import CLIPS_DIR, ClipReader, read_manifest
from talkinghead.difftalk.configs import PRESETS, DiffTalkVQConfig
from talkinghead.difftalk.networks import build_first_stage, decode_latents, encode_images
from talkinghead.train.config import TrainConfig
from talkinghead.train.loop import Task, load_checkpoint, seeded

FIRST_STAGE_DIR = "first_stage"
CODEBOOK_INIT_FRAMES = 64  # training frames whose latents seed the codebook


class FrameDataset(Dataset):
    """Every frame of a split, resized: item ``{"image": (3, S, S) float32 in [-1, 1]}``."""

    def __init__(self, root: str | Path, split: str, size: int, num_repeats: int = 1) -> None:
        manifest = read_manifest(root)
        self.clips = [ClipReader(Path(root) / CLIPS_DIR / c.id) for c in manifest.split(split)]
        if not self.clips:
            raise ValueError(f"{root} has no {split!r} clips.")
        self.index = [(c, f) for c, clip in enumerate(self.clips) for f in range(clip.num_frames)]
        self.size = size
        self.num_repeats = num_repeats

    def __len__(self) -> int:
        return len(self.index) * self.num_repeats

    def __getitem__(self, item: int) -> dict[str, Tensor]:
        c, f = self.index[item % len(self.index)]
        frame = np.array(self.clips[c].frames[f])  # a writable copy of the memory-mapped frame
        if frame.shape[0] != self.size:
            frame = cv2.resize(frame, (self.size, self.size), interpolation=cv2.INTER_AREA)
        image = torch.from_numpy(frame).permute(2, 0, 1).float()
        return {"image": image / 127.5 - 1.0}


class VQObjective(nn.Module):
    """``forward(batch, generator)`` -> (L1 + codebook loss, metrics) of one batch of frames."""

    def __init__(self, vq: nn.Module):
        super().__init__()
        self.vq = vq

    def forward(self, batch: dict[str, Tensor], generator: torch.Generator) -> tuple[Tensor, dict]:
        x = batch["image"]
        latents = encode_images(self.vq, x)  # -> (B, 3, S/4, S/4), continuous
        quantized, codebook, (_, _, codes) = self.vq.quantize(latents)  # straight-through
        recon = decode_latents(self.vq, quantized, quantize=False)  # already quantised
        l1 = (recon - x).abs().mean()
        used = torch.unique(codes).numel() / self.vq.quantize.n_e
        metrics = {"l1": l1.detach(), "codebook": codebook.detach()}
        metrics["codes_used"] = torch.tensor(float(used), device=x.device)
        return l1 + codebook, metrics


@torch.no_grad()
def init_codebook(vq: nn.Module, dataset: FrameDataset, seed: int) -> None:
    """Set the codebook to encoder outputs at random positions of random training frames."""
    rng = np.random.default_rng(seed)
    picks = rng.choice(len(dataset.index), min(CODEBOOK_INIT_FRAMES, len(dataset.index)), False)
    images = torch.stack([dataset[int(i)]["image"] for i in picks])
    latents = encode_images(vq, images).permute(0, 2, 3, 1).reshape(-1, images.shape[1])
    table = vq.quantize.embedding.weight
    rows = torch.from_numpy(rng.choice(len(latents), table.shape[0], len(latents) < len(table)))
    noise = torch.from_numpy(rng.standard_normal(table.shape).astype(np.float32))
    table.copy_(latents[rows] + 1e-3 * noise)


def build_task(cfg: TrainConfig) -> Task:
    """The preset's VQ autoencoder, its objective and the training frames of ``cfg.data``."""
    if cfg.preset not in PRESETS:
        raise ValueError(f"preset={cfg.preset!r} must be one of {sorted(PRESETS)} for DiffTalk.")
    preset = PRESETS[cfg.preset]
    vq_cfg = preset.first_stage
    dataset = FrameDataset(cfg.data, "train", preset.image_size, cfg.num_repeats)
    with seeded(cfg.seed):
        vq = build_first_stage(vq_cfg)
    init_codebook(vq, dataset, cfg.seed)
    return Task(
        model=vq,
        objective=VQObjective(vq),
        dataset=dataset,
        model_config={"first_stage": checkpoints.config_to_dict(vq_cfg)},
        collate_fn=default_collate,
    )


def export(run_dir: str | Path, model_dir: str | Path) -> list[Path]:
    """Write the run's VQ autoencoder (raw weights) to ``model_dir/first_stage``."""
    ckpt = load_checkpoint(run_dir)
    vq_cfg = checkpoints.config_from_dict(DiffTalkVQConfig, ckpt["model_config"]["first_stage"])
    vq = checkpoints.build_and_load(vq_cfg, ckpt["model"], what=f"{run_dir} first stage")
    meta = {
        "component": FIRST_STAGE_DIR,
        "source_file": f"{run_dir} step {ckpt['step']}",
        "converter_version": "train",
    }
    return [checkpoints.save_component(vq, vq_cfg, Path(model_dir) / FIRST_STAGE_DIR, meta)]
