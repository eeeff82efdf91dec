"""Which metric networks are available: weight files by name, loading, and 'needs weights' notes.

Weights are never downloaded here: users pass ``--weights-dir`` (or set
``TALKINGHEAD_EVAL_WEIGHTS``) pointing at a folder with the official files below. A metric whose
file is absent is reported as ``needs weights`` with where to get it; the others still run.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from talkinghead.eval.arcface import ARCFACE_WEIGHTS_NAME, ARCFACE_WEIGHTS_URL, load_arcface
from talkinghead.eval.i3d import I3D_WEIGHTS_NAME, I3D_WEIGHTS_URL, load_i3d
from talkinghead.eval.inception import FID_WEIGHTS_NAME, FID_WEIGHTS_URL, load_fid_inception
from talkinghead.eval.syncnet import SYNCNET_WEIGHTS_NAME, SYNCNET_WEIGHTS_URL, load_syncnet

logger = logging.getLogger(__name__)

WEIGHTS_ENV = "TALKINGHEAD_EVAL_WEIGHTS"

# network -> (file name in the weights dir, where to get it, loader)
WEIGHT_FILES = {
    "inception": (FID_WEIGHTS_NAME, FID_WEIGHTS_URL, load_fid_inception),
    "i3d": (I3D_WEIGHTS_NAME, I3D_WEIGHTS_URL, load_i3d),
    "syncnet": (SYNCNET_WEIGHTS_NAME, SYNCNET_WEIGHTS_URL, load_syncnet),
    "arcface": (ARCFACE_WEIGHTS_NAME, ARCFACE_WEIGHTS_URL, load_arcface),
}

# Table 1 metric -> network it needs
METRIC_NETWORK = {
    "FID": "inception",
    "FVD16": "i3d",
    "FVD32": "i3d",
    "LSE-C": "syncnet",
    "LSE-D": "syncnet",
    "CSIM": "arcface",
}


@dataclass
class MetricNetworks:
    """Loaded networks by name (``inception``, ``i3d``, ``syncnet``, ``arcface``) and why others are not."""

    models: dict[str, nn.Module] = field(default_factory=dict)
    missing: dict[str, dict[str, str]] = field(default_factory=dict)

    def get(self, name: str) -> nn.Module | None:
        return self.models.get(name)

    def missing_entry(self, name: str) -> dict[str, str]:
        return self.missing[name]


def resolve_weights_dir(weights_dir: str | Path | None) -> Path | None:
    """``weights_dir`` if given, else ``$TALKINGHEAD_EVAL_WEIGHTS``, else None."""
    if weights_dir is not None:
        return Path(weights_dir)
    env = os.environ.get(WEIGHTS_ENV)
    return Path(env) if env else None


def load_networks(
    weights_dir: str | Path | None, device: torch.device | str = "cpu"
) -> MetricNetworks:
    """Load every metric network whose official file is in ``weights_dir``."""
    root = resolve_weights_dir(weights_dir)
    nets = MetricNetworks()
    for name, (filename, url, loader) in WEIGHT_FILES.items():
        path = root / filename if root is not None else None
        if path is None or not path.is_file():
            nets.missing[name] = {
                "status": "needs weights",
                "file": filename,
                "get_it_from": url,
                "put_it_in": f"--weights-dir or ${WEIGHTS_ENV}",
            }
            continue
        try:
            nets.models[name] = loader(path, device)
        except (RuntimeError, ValueError, OSError) as err:
            # A corrupt or wrong-layout file disables its metric only; strict loading says why.
            logger.warning("could not load %s: %s", path, err)
            nets.missing[name] = {
                "status": "weights failed to load",
                "file": str(path),
                "error": str(err)[:500],
            }
    return nets
