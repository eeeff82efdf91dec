"""Reading third-party metric checkpoints (FID Inception, SyncNet, ArcFace) for strict loading.

Official files differ only in harmless ways from what ``load_state_dict(strict=True)`` expects:
some wrap the weights (``state_dict``), DataParallel adds ``module.``, and checkpoints saved before
PyTorch 0.4.1 have no BatchNorm ``num_batches_tracked`` counters. We normalise exactly these and
let strict loading reject anything else.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import Tensor, nn


def load_official_state_dict(path: str | Path, model: nn.Module) -> dict[str, Tensor]:
    """State dict at ``path`` normalised for ``model.load_state_dict(..., strict=True)``."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"weights file not found: {path}")
    sd = torch.load(path, map_location="cpu", weights_only=True)
    if isinstance(sd, dict) and isinstance(sd.get("state_dict"), dict):
        sd = sd["state_dict"]
    if not isinstance(sd, dict):
        # ValueError, not TypeError: a bad file is bad input, and callers catch ValueError for it.
        raise ValueError(f"{path} does not hold a state dict (got {type(sd).__name__})")  # noqa: TRY004
    sd = {k.removeprefix("module."): v for k, v in sd.items()}
    for name, buf in model.state_dict().items():
        if name.endswith("num_batches_tracked") and name not in sd:
            sd[name] = torch.zeros_like(buf)
    return sd
