"""Training Diffused Heads (diffusedheads_spec.md §4): ``talkinghead train diffused-heads``.

``build_task`` hands the shared loop (``train/loop.py``: EMA, exact resume, DDP, bf16 autocast on
CUDA) the UNet and the SDA audio encoder as one trainable module, the objective L_simple +
1e-4·L_vlb + 0.2·L_lip (``objective.py``) and the frame dataset (``training_data.py``). ``export``
writes the run's EMA weights as a model directory that ``talkinghead generate --model DIR`` loads.

The audio encoder trains jointly, from scratch, on the raw 16 kHz waveform. The official trained the
UNet on embeddings precomputed by a pretrained SDA encoder; none is available here (its file is not
public in usable form, and a frozen random encoder would carry no speech), and training the same
SDA network end to end keeps the model directory identical to a converted CREMA one (``unet`` +
``audio_encoder``, the pipeline unchanged). Its GRU runs from each clip's first frame, as in
generation. ``init_from`` (a run dir or a model dir, e.g. the converted CREMA release) starts
from trained weights instead.

Official values (``train.config.STAGE_DEFAULTS``): Adam, lr 5e-5, batch 10 per GPU, no clipping;
the official StepLR schedule is replaced by the loop's cosine decay. The architecture is the
preset's at the data's resolution (attention at the same downsampling factors).
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

from torch import nn

from talkinghead import checkpoints
from talkinghead.checkpoints import config_from_dict, config_to_dict
from talkinghead.data.layout import read_manifest
from talkinghead.diffused_heads.audio_encoder import SDAAudioEncoder
from talkinghead.diffused_heads.configs import PRESETS, DiffusedHeadsConfig
from talkinghead.diffused_heads.convert import FAMILY, write_model_dir
from talkinghead.diffused_heads.objective import DiffusedHeadsObjective
from talkinghead.diffused_heads.training_data import DiffusedHeadsFrameDataset, collate_frames
from talkinghead.diffused_heads.unet import DiffusedHeadsUNet
from talkinghead.model_index import has_model_index, read_model_index
from talkinghead.train.config import TrainConfig
from talkinghead.train.loop import CHECKPOINT, Task, load_checkpoint, seeded

CONFIG_KEY = "diffused_heads"  # model_config entry of the checkpoints
NETWORKS = ("unet", "audio_encoder")


class DiffusedHeadsTrainable(nn.Module):
    """What the loop optimises (and averages into the EMA): the UNet and the audio encoder."""

    def __init__(self, cfg: DiffusedHeadsConfig) -> None:
        super().__init__()
        self.unet = DiffusedHeadsUNet(cfg.unet)
        self.audio_encoder = SDAAudioEncoder(cfg.audio_encoder)


def model_config(preset: str, data: str | Path, prediction: str = "eps") -> DiffusedHeadsConfig:
    """The preset's architecture at the training set's resolution (output written at twice it),
    its UNet predicting ``prediction``."""
    if preset not in PRESETS:
        raise ValueError(f"preset={preset!r} must be one of {sorted(PRESETS)} for Diffused Heads.")
    base, size = PRESETS[preset], read_manifest(data).resolution
    factor = 2 ** (len(base.unet.channel_mult) - 1)
    attention = [r * size / base.unet.image_size for r in base.unet.attention_resolutions]
    if size % factor or any(r != int(r) for r in attention):
        raise ValueError(
            f"data resolution {size} does not suit the {preset!r} UNet: it must be divisible by "
            f"{factor} and keep its attention maps ({base.unet.attention_resolutions} px at "
            f"{base.unet.image_size} px) whole; prepare the data at another resolution."
        )
    unet = dataclasses.replace(
        base.unet, image_size=size, attention_resolutions=tuple(int(r) for r in attention)
    )
    diffusion = dataclasses.replace(base.diffusion, prediction=prediction)
    return dataclasses.replace(
        base, resolution=size, output_size=2 * size, unet=unet, diffusion=diffusion
    )


def _initial_weights(model: DiffusedHeadsTrainable, path: str | Path) -> None:
    """Load a run's EMA weights, or a model dir's components (an encoder-less one keeps ours)."""
    path = Path(path)
    if path.is_file() or (path / CHECKPOINT).is_file():
        checkpoints.load_state_dict_strict(model, load_checkpoint(path)["ema"], what=str(path))
        return
    if not has_model_index(path):
        raise ValueError(f"init_from={path} is neither a training run nor a model directory.")
    index = read_model_index(path)
    if index.family != FAMILY:
        raise ValueError(f"init_from={path} holds a {index.family!r} model, not Diffused Heads.")
    for name, folder in index.components.items():
        trained = checkpoints.load_component(path / folder)
        checkpoints.load_state_dict_strict(
            getattr(model, name), trained.state_dict(), what=f"{path} {name}"
        )


def build_task(cfg: TrainConfig) -> Task:
    """Networks, objective and frame dataset of ``cfg`` (resolved)."""
    model_cfg = model_config(cfg.preset, cfg.data, cfg.prediction)
    with seeded(cfg.seed):
        model = DiffusedHeadsTrainable(model_cfg)
    if cfg.init_from:
        _initial_weights(model, cfg.init_from)
    encoder, unet_cfg = model.audio_encoder, model_cfg.unet
    dataset = DiffusedHeadsFrameDataset(
        cfg.data,
        "train",
        n_motion_frames=unet_cfg.n_motion_frames,
        n_audio_motion_embs=unet_cfg.n_audio_motion_embs,
        window=encoder.window,
        stride=encoder.stride,
        sample_rate=model_cfg.audio_encoder.sample_rate,
        seed=cfg.seed,
        num_repeats=cfg.num_repeats,
    )
    objective = DiffusedHeadsObjective(
        model.unet,
        num_train_timesteps=model_cfg.diffusion.num_train_timesteps,
        faithful_lip=cfg.faithful_lip,
        audio_encoder=encoder,
        prediction=model_cfg.diffusion.prediction,
    )
    return Task(
        model=model,
        objective=objective,
        dataset=dataset,
        model_config={CONFIG_KEY: config_to_dict(model_cfg), "networks": list(NETWORKS)},
        collate_fn=collate_frames,
    )


def export(run_dir: str | Path, model_dir: str | Path) -> list[Path]:
    """Write the run's EMA UNet and audio encoder as a Diffused Heads model directory."""
    ckpt = load_checkpoint(run_dir)
    cfg = config_from_dict(DiffusedHeadsConfig, ckpt["model_config"][CONFIG_KEY])
    source = {"source_file": f"{run_dir} step {ckpt['step']} (EMA)", "converter_version": "train"}
    parts = {}
    for name, part_cfg in (("unet", cfg.unet), ("audio_encoder", cfg.audio_encoder)):
        prefix = f"{name}."
        state = {k.removeprefix(prefix): v for k, v in ckpt["ema"].items() if k.startswith(prefix)}
        module = checkpoints.build_and_load(part_cfg, state, what=f"{run_dir} {name}")
        parts[name] = (module, part_cfg, {**source, "component": name})
    return [write_model_dir(Path(model_dir), parts, cfg)]
