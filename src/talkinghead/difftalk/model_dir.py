"""A DiffTalk model directory: three components and one ``model_index.json``.

::

    difftalk-model/
      model_index.json          {"format": "talkinghead", "format_version": 1, "family": "difftalk",
                                 "components": {...}, "audio_features": ..., "config": {...}}
      first_stage/  config.json  model.safetensors     VQ autoencoder (diffusers VQModel)
      unet/         config.json  model.safetensors     denoiser (diffusers UNet2DConditionModel)
      condition/    config.json  model.safetensors     AudioNet + AudioAttNet + LdmNet

Components are saved and loaded with ``checkpoints.save_component`` / ``load_component`` (built on
the meta device, strict load); the index is ``talkinghead.model_index``. ``config`` holds the ``DiffTalkConfig`` fields that are not networks (image size, schedule, masks).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from talkinghead.checkpoints import load_component, read_config, save_component
from talkinghead.difftalk.configs import DiffTalkConfig
from talkinghead.files import atomic_directory
from talkinghead.model_index import INDEX_FILE, ModelIndex, read_model_index, write_model_index

FAMILY = "difftalk"
COMPONENTS: dict[str, str] = {
    "first_stage": "first_stage",
    "unet": "unet",
    "condition": "condition",
}
_NETWORK_FIELDS = ("first_stage", "denoiser", "condition")


@dataclass
class DiffTalkModules:
    """The three networks of one DiffTalk model and its config."""

    config: DiffTalkConfig  # the whole model config (networks + pipeline settings)
    first_stage: nn.Module  # diffusers VQModel
    unet: nn.Module  # diffusers UNet2DConditionModel
    condition: nn.Module  # ConditionEncoder

    def networks(self) -> dict[str, nn.Module]:
        return {"first_stage": self.first_stage, "unet": self.unet, "condition": self.condition}


def pipeline_settings(cfg: DiffTalkConfig) -> dict[str, Any]:
    """The non-network fields of ``cfg`` (the ``config`` of ``model_index.json``)."""
    return {
        f.name: getattr(cfg, f.name)
        for f in dataclasses.fields(cfg)
        if f.name not in _NETWORK_FIELDS
    }


def difftalk_index(cfg: DiffTalkConfig) -> ModelIndex:
    """The ``model_index.json`` record of a DiffTalk directory."""
    return ModelIndex(FAMILY, dict(COMPONENTS), cfg.audio_features, pipeline_settings(cfg))


def save_model_dir(
    modules: DiffTalkModules, directory: str | Path, metadata: dict[str, str] | None = None
) -> Path:
    """Write the whole model directory atomically (``files.atomic_directory``; an existing one is
    replaced)."""
    cfg = modules.config
    configs = {"first_stage": cfg.first_stage, "unet": cfg.denoiser, "condition": cfg.condition}
    with atomic_directory(directory) as tmp:
        for name, net in modules.networks().items():
            meta = {"component": name, **(metadata or {})}
            save_component(net, configs[name], tmp / COMPONENTS[name], meta)
        write_model_index(tmp, difftalk_index(cfg))
    return Path(directory)


def load_model_dir(
    directory: str | Path, device: str | torch.device = "cpu", dtype: torch.dtype | None = None
) -> DiffTalkModules:
    """Load a DiffTalk model directory (strict, eval mode)."""
    directory = Path(directory)
    index = read_model_index(directory, FAMILY)
    # the files hold float32; casting to it anyway makes diffusers warn about upcast modules
    cast = None if dtype == torch.float32 else dtype
    parts = {
        name: load_component(directory / sub, device=device, dtype=cast)
        for name, sub in index.components.items()
    }
    if set(parts) != set(COMPONENTS):
        raise ValueError(f"{directory / INDEX_FILE} must list the components {sorted(COMPONENTS)}.")
    configs = {name: read_config(directory / sub) for name, sub in index.components.items()}
    settings = {k: tuple(v) if isinstance(v, list) else v for k, v in index.config.items()}
    cfg = DiffTalkConfig(
        first_stage=configs["first_stage"],
        denoiser=configs["unet"],
        condition=configs["condition"],
        **settings,
    )
    return DiffTalkModules(config=cfg, **parts)
