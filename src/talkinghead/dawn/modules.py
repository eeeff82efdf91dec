"""DAWN's networks as one record, and its model directory on disk (``model_index.json`` + components).

A DAWN model directory::

    dawn-128/
      model_index.json   family "dawn", audio features, {"resolution": 128, "diffusion": {...}}
      flow_ae/  config.json  model.safetensors     LFG (FlowAutoencoder)
      pose/     config.json  model.safetensors     PBNet pose net (PoseBlinkCVAE, motion_dim=6)
      blink/    config.json  model.safetensors     PBNet blink net (PoseBlinkCVAE, motion_dim=2)
      unet/     config.json  model.safetensors     A2V-FDM denoiser (UNet3D)
      face_loc/ config.json  model.safetensors     face-location encoder (FaceLocationEncoder)
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from talkinghead.checkpoints import (
    CONFIG_FILE,
    FETCH_HINT,
    WEIGHTS_FILE,
    config_from_dict,
    config_to_dict,
    load_component,
    missing_files_error,
)
from talkinghead.dawn.configs import DiffusionConfig
from talkinghead.model_index import ModelIndex, read_model_index, write_model_index

FAMILY = "dawn"
COMPONENTS: tuple[str, ...] = ("flow_ae", "pose", "blink", "unet", "face_loc")
CONVERT_HINT = FETCH_HINT + " and `talkinghead convert official`"


@dataclass
class DawnModules:
    """All networks of one DAWN model directory."""

    resolution: int  # frame size (square) the model works at
    flow_ae: nn.Module  # LFG
    pose: nn.Module  # PBNet pose net
    blink: nn.Module  # PBNet blink net
    unet: nn.Module  # A2V-FDM denoiser
    face_loc: nn.Module  # face-location encoder

    def as_dict(self) -> dict[str, nn.Module]:
        return {name: getattr(self, name) for name in COMPONENTS}


def dawn_index(
    resolution: int, audio_features: str, diffusion: DiffusionConfig | None = None
) -> ModelIndex:
    """The ``model_index.json`` record of a DAWN directory."""
    return ModelIndex(
        family=FAMILY,
        components={name: name for name in COMPONENTS},
        audio_features=audio_features,
        config={
            "resolution": int(resolution),
            "diffusion": config_to_dict(diffusion or DiffusionConfig()),
        },
    )


def write_dawn_index(
    directory: str | Path, resolution: int, audio_features: str,
    diffusion: DiffusionConfig | None = None,
) -> Path:
    """Write the index of a DAWN directory whose components are already in place."""
    return write_model_index(directory, dawn_index(resolution, audio_features, diffusion))


def diffusion_config(index: ModelIndex) -> DiffusionConfig:
    """The diffusion settings a DAWN index records (official defaults for legacy directories)."""
    return config_from_dict(DiffusionConfig, index.config.get("diffusion", {}))


def load_dawn_modules(
    path: str | Path, device: str | torch.device = "cpu", dtype: torch.dtype | None = None
) -> DawnModules:
    """Load every component of a DAWN model directory (layout in the module docstring)."""
    path = Path(path)
    index = read_model_index(path, FAMILY)
    folders = {c: index.components.get(c, c) for c in COMPONENTS}
    missing = [
        f"{folders[c]}/{n}"
        for c in COMPONENTS
        for n in (CONFIG_FILE, WEIGHTS_FILE)
        if not (path / folders[c] / n).is_file()
    ]
    if missing:
        raise missing_files_error(missing, path, CONVERT_HINT)
    modules = {
        c: load_component(path / folders[c], device=device, dtype=dtype) for c in COMPONENTS
    }
    return DawnModules(resolution=int(index.config["resolution"]), **modules)
