"""Training DiffTalk (difftalk_spec.md §4): ``build_task`` / ``export`` for the shared loop.

Objective (official, §4.2): ``t ~ U{0..T-1}``, ``z_t = sqrt(ᾱ_t) z0 + sqrt(1 - ᾱ_t) eps`` with z0 the
frozen VQ latent of the target frame, and the loss ``mean((eps - eps_hat)^2)``; the condition
encoders train with the UNet. The shared loop (``train/loop.py``) provides AdamW, gradient
clipping, EMA with LDM's warm-up ``min(decay, (1 + n) / (10 + n))``, resume, DDP and bf16.

Data: a prepared training set (``data/dataset_layout.py``) whose clips also hold
``landmarks.npy`` (F, 68, 2) in frame pixels. Per item one target frame; its reference is a frame
of the same clip at least ``reference_min_distance`` (60) frames away, drawn once when the data
set is built as the official loader does (the farthest frame for clips shorter than that); the
masked frame is cut at landmark 30 (the official training cut; inference uses 33). The frozen
encoder's latents of every frame and masked frame are computed once and cached in
``RUN_DIR/latents/`` (keyed by the first stage's weights), not recomputed every step.

Export: the UNet from the EMA weights (the official samples in ``ema_scope``, which covers only the
UNet) and the condition encoders from the raw weights, with the first stage, as a model dir.
"""

from __future__ import annotations

import dataclasses
import hashlib
import logging
from pathlib import Path

import cv2
import numpy as np
import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file
from torch import Tensor, nn
from torch.utils.data import Dataset, default_collate

from talkinghead import checkpoints
from talkinghead.data.layout import CLIPS_DIR, ClipReader, read_manifest
from talkinghead.difftalk.audio_windows import logmel_condition, smooth_windows
from talkinghead.difftalk.conditioning import ConditionEncoder
from talkinghead.difftalk.configs import (
    AUDIO_FEATURES,
    PRESETS,
    DiffTalkConfig,
    difftalk_config_from_dict,
)
from talkinghead.difftalk.geometry import TRAINING_MASK_LANDMARK, masked_frame, upper_face_landmarks
from talkinghead.difftalk.model_dir import DiffTalkModules, save_model_dir
from talkinghead.difftalk.networks import build_denoiser, encode_images, predict_eps
from talkinghead.diffusion.schedules import buffers_from_betas, scaled_linear_betas
from talkinghead.files import atomic_output
from talkinghead.media.audio import load_audio
from talkinghead.train.config import TrainConfig
from talkinghead.train.loop import Task, load_checkpoint, seeded

logger = logging.getLogger(__name__)

LATENT_DIR = "latents"
LANDMARKS = "landmarks"  # per-clip extra: (F, 68, 2) frame pixels
DEEPSPEECH = "deepspeech"  # per-clip extra for DeepSpeech-trained models: (F, 16, 29)


class DiffTalkTrainable(nn.Module):
    """What the loop optimises: the UNet and the condition encoders (the first stage is frozen)."""

    def __init__(self, cfg: DiffTalkConfig):
        super().__init__()
        self.unet = build_denoiser(cfg.denoiser)
        self.condition = ConditionEncoder(cfg.condition)


def first_stage_fingerprint(first_stage: nn.Module) -> str:
    """sha256 over the first stage's weights (names the latent cache)."""
    digest = hashlib.sha256()
    for name, value in sorted(first_stage.state_dict().items()):
        digest.update(name.encode())
        digest.update(value.detach().float().cpu().numpy().tobytes())
    return digest.hexdigest()[:16]


def reference_indices(num_frames: int, min_distance: int, rng: np.random.Generator) -> np.ndarray:
    """(F,) a random frame at least ``min_distance`` away from each frame (else the farthest one)."""
    frames = np.arange(num_frames)
    out = np.empty(num_frames, np.int64)
    for i in frames:
        far = frames[np.abs(frames - i) >= min_distance]
        out[i] = rng.choice(far) if far.size else (0 if i >= num_frames / 2 else num_frames - 1)
    return out


class DiffTalkFrameDataset(Dataset):
    """One item per (clip, frame): cached latents, reference latent, audio windows, landmarks.

    Item: ``latent``, ``masked_latent``, ``reference_latent`` (3, h, w); ``audio`` (8, 16, C);
    ``landmarks`` (39, 2) in pixels of the model's image size.
    """

    def __init__(
        self,
        root: str | Path,
        split: str,
        *,
        cfg: DiffTalkConfig,
        first_stage: nn.Module,
        cache_dir: str | Path,
        seed: int = 0,
        num_repeats: int = 1,
    ) -> None:
        manifest = read_manifest(root)
        self.cfg = cfg
        self.clips = [ClipReader(Path(root) / CLIPS_DIR / c.id) for c in manifest.split(split)]
        if not self.clips:
            raise ValueError(f"{root} has no {split!r} clips.")
        fingerprint = first_stage_fingerprint(first_stage)
        rng = np.random.default_rng(seed)
        self.data = [
            self._clip_tensors(c, first_stage, Path(cache_dir), fingerprint) for c in self.clips
        ]
        self.references = [
            reference_indices(c.num_frames, cfg.reference_min_distance, rng) for c in self.clips
        ]
        self.index = [(c, f) for c, clip in enumerate(self.clips) for f in range(clip.num_frames)]
        self.num_repeats = num_repeats

    def _landmarks(self, clip: ClipReader) -> np.ndarray:
        try:
            points = np.asarray(clip.array(LANDMARKS), np.float64)
        except ValueError:
            raise ValueError(
                f"{clip.dir} has no {LANDMARKS}.npy: DiffTalk trains on 68-point landmarks per frame "
                "(prepare the data with the 3DDFA_V2 face assets)."
            ) from None
        scale = self.cfg.image_size / clip.frames.shape[1]
        return points * scale  # -> pixels of the model's crop

    def _audio(self, clip: ClipReader) -> Tensor:
        kind, f = self.cfg.audio_features, clip.num_frames
        if kind == "logmel":
            audio = load_audio(clip.dir / "audio.wav")
            return logmel_condition(audio, f, n_mels=self.cfg.condition.audio_channels)
        if kind == DEEPSPEECH:
            return smooth_windows(torch.from_numpy(np.asarray(clip.array(DEEPSPEECH), np.float32)))
        raise ValueError(f"training DiffTalk on {kind!r} features is not supported; use logmel.")

    @torch.no_grad()
    def _clip_tensors(
        self, clip: ClipReader, first_stage: nn.Module, cache_dir: Path, fingerprint: str
    ) -> dict[str, Tensor]:
        landmarks = self._landmarks(clip)
        path = cache_dir / f"{clip.dir.name}.safetensors"
        if path.is_file() and _fingerprint_of(path) == fingerprint:
            cached = load_file(str(path))
        else:
            cached = self._encode(clip, landmarks, first_stage)
            with atomic_output(path) as tmp:  # an interrupted run leaves no torn cache file
                tensors = {k: v.contiguous() for k, v in cached.items()}
                save_file(tensors, str(tmp), {"first_stage": fingerprint})
        upper = np.stack([upper_face_landmarks(p) for p in landmarks])
        return {
            "latents": cached["latents"],
            "masked_latents": cached["masked_latents"],
            "audio": self._audio(clip).float(),
            "landmarks": torch.from_numpy(upper),
        }

    def _encode(
        self, clip: ClipReader, landmarks: np.ndarray, first_stage: nn.Module
    ) -> dict[str, Tensor]:
        size, latents, masked = self.cfg.image_size, [], []
        device = next(first_stage.parameters()).device
        for start in range(0, clip.num_frames, 16):
            frames = np.asarray(clip.frames[start : start + 16])
            crops = np.stack(
                [cv2.resize(f, (size, size), interpolation=cv2.INTER_AREA) for f in frames]
            )
            cut = np.stack(
                [
                    masked_frame(c, landmarks[start + k], TRAINING_MASK_LANDMARK)
                    for k, c in enumerate(crops)
                ]
            )
            for images, out in ((crops, latents), (cut, masked)):
                x = torch.from_numpy(images).permute(0, 3, 1, 2).float().to(device) / 127.5 - 1.0
                out.append(encode_images(first_stage, x).float().cpu())
        return {
            "latents": torch.cat(latents),
            "masked_latents": torch.cat(masked),
        }

    def __len__(self) -> int:
        return len(self.index) * self.num_repeats

    def __getitem__(self, item: int) -> dict[str, Tensor]:
        c, f = self.index[item % len(self.index)]
        data, ref = self.data[c], int(self.references[c][f])
        return {
            "latent": data["latents"][f],
            "masked_latent": data["masked_latents"][f],
            "reference_latent": data["latents"][ref],
            "audio": data["audio"][f],
            "landmarks": data["landmarks"][f],
        }


def _fingerprint_of(path: Path) -> str | None:
    with safe_open(str(path), framework="pt") as f:
        return (f.metadata() or {}).get("first_stage")


class DiffTalkObjective(nn.Module):
    """``forward(batch, generator)`` -> (eps-MSE loss, metrics) of one batch (spec §4.2)."""

    def __init__(self, model: DiffTalkTrainable, cfg: DiffTalkConfig):
        super().__init__()
        self.model = model
        buffers = buffers_from_betas(
            scaled_linear_betas(cfg.num_train_steps, cfg.beta_start, cfg.beta_end)
        )
        self.register_buffer("sqrt_ab", buffers["sqrt_alphas_cumprod"], persistent=False)
        self.register_buffer(
            "sqrt_1m_ab", buffers["sqrt_one_minus_alphas_cumprod"], persistent=False
        )

    def forward(self, batch: dict[str, Tensor], generator: torch.Generator) -> tuple[Tensor, dict]:
        z0 = batch["latent"]
        b = z0.shape[0]
        t = torch.randint(
            0, self.sqrt_ab.numel(), (b,), generator=generator, device=generator.device
        )
        noise = torch.randn(z0.shape, generator=generator, device=generator.device)
        t, noise = t.to(z0.device), noise.to(device=z0.device, dtype=z0.dtype)
        z_t = self.sqrt_ab[t].view(b, 1, 1, 1) * z0 + self.sqrt_1m_ab[t].view(b, 1, 1, 1) * noise
        context = self.model.condition(batch["audio"], batch["landmarks"])
        eps = predict_eps(
            self.model.unet, z_t, t, batch["masked_latent"], batch["reference_latent"], context
        )
        loss = torch.nn.functional.mse_loss(eps.float(), noise.float())
        return loss, {"loss_simple": loss.detach()}


def load_first_stage(path: str | Path) -> nn.Module:
    """A frozen VQ first stage from a DiffTalk model dir or a first_stage component dir."""
    path = Path(path)
    directory = path / "first_stage" if (path / "first_stage").is_dir() else path
    return checkpoints.load_component(directory).requires_grad_(False).eval()


def difftalk_config(cfg: TrainConfig, first_stage_cfg) -> DiffTalkConfig:
    """The preset's architecture with the first stage's config and the data's audio feature."""
    if cfg.preset not in PRESETS:
        raise ValueError(f"preset={cfg.preset!r} must be one of {sorted(PRESETS)} for DiffTalk.")
    manifest = read_manifest(cfg.data)
    base = PRESETS[cfg.preset]
    kind = "logmel" if manifest.audio_feature.startswith("logmel") else base.audio_features
    condition = dataclasses.replace(base.condition, audio_channels=AUDIO_FEATURES[kind])
    return dataclasses.replace(
        base, first_stage=first_stage_cfg, condition=condition, audio_features=kind
    )


def build_task(cfg: TrainConfig) -> Task:
    """DiffTalk networks, objective and frame dataset of ``cfg`` (resolved; ``first_stage`` set)."""
    if cfg.first_stage is None:
        raise ValueError(
            "DiffTalk training needs a first stage: pass first_stage (a VQ model dir)."
        )
    first_stage = load_first_stage(cfg.first_stage)
    model_cfg = difftalk_config(cfg, checkpoints.read_config(_component_dir(cfg.first_stage)))
    with seeded(cfg.seed):
        model = DiffTalkTrainable(model_cfg)
    dataset = DiffTalkFrameDataset(
        cfg.data,
        "train",
        cfg=model_cfg,
        first_stage=first_stage,
        cache_dir=Path(cfg.run_dir) / LATENT_DIR,
        seed=cfg.seed,
        num_repeats=cfg.num_repeats,
    )
    return Task(
        model=model,
        objective=DiffTalkObjective(model, model_cfg),
        dataset=dataset,
        model_config={
            "difftalk": dataclasses.asdict(model_cfg),
            "networks": ["unet", "condition"],
            "audio_features": model_cfg.audio_features,
            "first_stage": str(Path(cfg.first_stage).resolve()),
        },
        collate_fn=default_collate,
    )


def _component_dir(path: str | Path) -> Path:
    path = Path(path)
    return path / "first_stage" if (path / "first_stage").is_dir() else path


def export(run_dir: str | Path, model_dir: str | Path) -> list[Path]:
    """Write the run as a DiffTalk model dir: EMA UNet, raw condition encoders, the first stage."""
    ckpt = load_checkpoint(run_dir)
    mc = ckpt["model_config"]
    cfg = difftalk_config_from_dict(mc["difftalk"])
    nets: dict[str, nn.Module] = {}
    for name, source in (("unet", "ema"), ("condition", "model")):
        state = {
            k.removeprefix(f"{name}."): v
            for k, v in ckpt[source].items()
            if k.startswith(f"{name}.")
        }
        part = cfg.denoiser if name == "unet" else cfg.condition
        nets[name] = checkpoints.build_and_load(part, state, what=f"{run_dir} {name}")
    modules = DiffTalkModules(config=cfg, first_stage=load_first_stage(mc["first_stage"]), **nets)
    meta = {
        "source_file": f"{run_dir} step {ckpt['step']} (EMA UNet)",
        "converter_version": "train",
    }
    return [save_model_dir(modules, model_dir, meta)]
