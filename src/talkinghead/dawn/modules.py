"""DAWN's networks as one record, and its model directory on disk (``model_index.json`` + components).

A DAWN model directory::

    dawn-128/
      model_index.json   family "dawn", audio features, {"resolution": 128, "diffusion": {...}}
                         (+ "distilled_steps": N when unet is a step-distilled student)
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
# index config entry: the unet is a student distilled for N DDIM steps (dawn/training/distill.py)
DISTILLED_STEPS = "distilled_steps"


@dataclass
class DawnModules:
    """All networks of one DAWN model directory."""

    resolution: int  # frame size (square) the model works at
    flow_ae: nn.Module  # LFG
    pose: nn.Module  # PBNet pose net
    blink: nn.Module  # PBNet blink net
    unet: nn.Module  # A2V-FDM denoiser
    face_loc: nn.Module  # face-location encoder
    distilled_steps: int | None = None  # unet is a student distilled for N DDIM steps (index)

    def as_dict(self) -> dict[str, nn.Module]:
        return {name: getattr(self, name) for name in COMPONENTS}


def dawn_index(
    resolution: int,
    audio_features: str,
    diffusion: DiffusionConfig | None = None,
    distilled_steps: int | None = None,
) -> ModelIndex:
    """The ``model_index.json`` record of a DAWN directory (``distilled_steps``: see
    ``DISTILLED_STEPS``; None = the UNet samples at any step count)."""
    config = {
        "resolution": int(resolution),
        "diffusion": config_to_dict(diffusion or DiffusionConfig()),
    }
    if distilled_steps is not None:
        config[DISTILLED_STEPS] = int(distilled_steps)
    return ModelIndex(
        family=FAMILY,
        components={name: name for name in COMPONENTS},
        audio_features=audio_features,
        config=config,
    )


def write_dawn_index(
    directory: str | Path,
    resolution: int,
    audio_features: str,
    diffusion: DiffusionConfig | None = None,
    distilled_steps: int | None = None,
) -> Path:
    """Write the index of a DAWN directory whose components are already in place."""
    index = dawn_index(resolution, audio_features, diffusion, distilled_steps)
    return write_model_index(directory, index)


def diffusion_config(index: ModelIndex) -> DiffusionConfig:
    """The diffusion settings a DAWN index records (official defaults for legacy directories)."""
    return config_from_dict(DiffusionConfig, index.config.get("diffusion", {}))


def distilled_steps(index: ModelIndex) -> int | None:
    """The DDIM steps the directory's UNet was distilled for, None for an ordinary one."""
    steps = index.config.get(DISTILLED_STEPS)
    if steps is None:
        return None
    if not isinstance(steps, int) or isinstance(steps, bool) or steps < 1:
        raise ValueError(f"{DISTILLED_STEPS}={steps!r} in the model index must be an int >= 1")
    return steps


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
    return DawnModules(
        resolution=int(index.config["resolution"]),
        distilled_steps=distilled_steps(index),
        **modules,
    )
