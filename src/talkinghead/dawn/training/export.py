"""What a training run hands on: trained networks loaded back, exported into a model dir, previews.

``load_trained`` reads a network from a run dir (EMA weights of ``checkpoint.pt``), a model dir or a
component dir; ``export_component`` writes one into a DAWN model directory (``dawn.modules``:
``model_index.json`` + ``<component>/config.json`` + ``model.safetensors``) so that the generation
pipeline loads it unchanged; ``write_image_rows`` saves sample previews as PNG grids.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from talkinghead import checkpoints
from talkinghead.checkpoints import config_from_dict
from talkinghead.dawn.configs import DawnConfig
from talkinghead.dawn.modules import distilled_steps, write_dawn_index
from talkinghead.model_index import has_model_index, read_model_index
from talkinghead.train.loop import CHECKPOINT, load_checkpoint


def load_trained(path: str | Path, component: str, *, ema: bool = True) -> tuple[nn.Module, Any]:
    """A network from a run dir / checkpoint (its EMA weights), a model dir or a component dir.

    Args:
        path: ``RUN_DIR`` (or its ``checkpoint.pt``), a model dir (``model_index.json``) or a component
            dir (``config.json`` + ``model.safetensors``).
        component: "flow_ae", "pose", "blink" or "unet" (the ``DawnConfig`` field / model-dir name).
        ema: take the EMA weights of a checkpoint (else the raw ones).
    Returns:
        ``(module in eval mode on CPU, its config)``.
    """
    path = Path(path)
    if path.is_file() or (path / CHECKPOINT).is_file():
        ckpt = load_checkpoint(path)
        mc = ckpt.get("model_config", {})
        if component not in mc.get("networks", ()):
            raise ValueError(f"{path} trained {mc.get('networks')}, not {component!r}")
        cfg = getattr(config_from_dict(DawnConfig, mc["dawn"]), component)
        state = ckpt["ema" if ema else "model"]
        prefix = f"{component}."
        if len(mc["networks"]) > 1:  # a container of several networks (A2V: unet + face_loc)
            state = {k.removeprefix(prefix): v for k, v in state.items() if k.startswith(prefix)}
        module = checkpoints.build_and_load(cfg, state, what=f"{path} {component}")
        return module, cfg
    directory = path / component if has_model_index(path) else path
    module = checkpoints.load_component(directory)
    return module, module.cfg  # type: ignore[return-value]


def export_component(
    model_dir: str | Path,
    component: str,
    module: nn.Module,
    cfg: Any,
    *,
    resolution: int,
    audio_features: str,
    source: str,
    distilled_for: int | None = None,
) -> Path:
    """Write one component into a DAWN model directory and create/update its index.

    Components already there are kept, so the three stages can export into the same folder; an
    index of another resolution or audio-feature kind is an error. The index's ``distilled_steps``
    belongs to the UNet: writing a ``unet`` sets it to ``distilled_for`` (None: an ordinary UNet),
    writing any other component keeps it.
    """
    model_dir = Path(model_dir)
    model_dir.mkdir(parents=True, exist_ok=True)
    if component != "unet" and distilled_for is not None:
        raise ValueError(f"distilled_for describes a unet, not {component!r}")
    if has_model_index(model_dir):
        old = read_model_index(model_dir)
        old_resolution = int(old.config["resolution"])
        if old_resolution != resolution or old.audio_features != audio_features:
            raise ValueError(
                f"{model_dir} holds a {old_resolution}-px {old.audio_features} model; this one is "
                f"{resolution}-px {audio_features}; export into another folder."
            )
        if component != "unet":
            distilled_for = distilled_steps(old)
    checkpoints.save_component(module, cfg, model_dir / component, {"source_file": source})
    write_dawn_index(model_dir, resolution, audio_features, distilled_steps=distilled_for)
    return model_dir / component


def write_image_rows(path: Path, rows: Sequence[Tensor]) -> Path:
    """Save a grid PNG: each row ``(N, 3, H, W)`` in [0, 1], all rows the same shape."""
    import cv2

    grid = torch.cat(
        [torch.cat(list(r.detach().float().cpu().clamp(0, 1)), dim=2) for r in rows], 1
    )
    image = (grid.permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)
    path.parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(path), image[:, :, ::-1])
    return path
