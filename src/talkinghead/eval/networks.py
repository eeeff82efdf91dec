"""Which metric networks are available: weight files by name, loading, and 'needs weights' notes.

Weights are never downloaded here: users pass ``--weights-dir`` (or set
``TALKINGHEAD_EVAL_WEIGHTS``) pointing at a folder with the official files below. A metric whose
file is absent is reported as ``needs weights`` with where to get it; the others still run.
Optional files refine a metric's input instead: ``sfd_face.pth`` (S3FD face tracks for SyncNet)
and a ``face3d/`` folder with the 3DDFA_V2 assets (FaceBoxes boxes and 68 landmarks for the
ArcFace alignment, BAS motion and every face box). Every loaded file is identified in the
report by its sha256.
"""

from __future__ import annotations

import hashlib
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from talkinghead.eval.arcface import ARCFACE_WEIGHTS_NAME, ARCFACE_WEIGHTS_URL, load_arcface
from talkinghead.eval.i3d import I3D_WEIGHTS_NAME, I3D_WEIGHTS_URL, load_i3d
from talkinghead.eval.inception import FID_WEIGHTS_NAME, FID_WEIGHTS_URL, load_fid_inception
from talkinghead.eval.s3fd import S3FD_WEIGHTS_NAME, S3FD_WEIGHTS_URL, load_s3fd
from talkinghead.eval.syncnet import SYNCNET_WEIGHTS_NAME, SYNCNET_WEIGHTS_URL, load_syncnet
from talkinghead.face.analysis import CHECKPOINTS, DETECTOR_FILE, FaceAnalyzer

logger = logging.getLogger(__name__)

WEIGHTS_ENV = "TALKINGHEAD_EVAL_WEIGHTS"
FACE3D_DIRNAME = "face3d"  # 3DDFA_V2 assets inside the weights folder (as next to a model)
FACE3D_URL = "https://github.com/cleardusk/3DDFA_V2 (weights/: FaceBoxesProd.pth, mb1_120x120.pth)"

# network -> (file name in the weights dir, where to get it, loader)
WEIGHT_FILES = {
    "inception": (FID_WEIGHTS_NAME, FID_WEIGHTS_URL, load_fid_inception),
    "i3d": (I3D_WEIGHTS_NAME, I3D_WEIGHTS_URL, load_i3d),
    "syncnet": (SYNCNET_WEIGHTS_NAME, SYNCNET_WEIGHTS_URL, load_syncnet),
    "arcface": (ARCFACE_WEIGHTS_NAME, ARCFACE_WEIGHTS_URL, load_arcface),
    "s3fd": (S3FD_WEIGHTS_NAME, S3FD_WEIGHTS_URL, load_s3fd),
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

# metric -> optional inputs that make it follow the reference protocol (fallbacks without them)
METRIC_OPTIONAL = {
    "LSE-C": ("s3fd", "face3d"),
    "LSE-D": ("s3fd", "face3d"),
    "CSIM": ("face3d",),
    "BAS": ("face3d",),
    "Blink/s": ("face3d",),
}


def weights_help() -> str:
    """One line per metric: the weight files it needs and the optional ones (CLI help)."""
    files = {n: f for n, (f, _, _) in WEIGHT_FILES.items()} | {"face3d": f"{FACE3D_DIRNAME}/"}
    lines = []
    for metric in ("FID", "FVD16", "FVD32", "LSE-C", "LSE-D", "CSIM", "BAS", "Blink/s"):
        need = METRIC_NETWORK.get(metric)
        text = f"needs {files[need]}" if need else "no weights"
        optional = [files[o] for o in METRIC_OPTIONAL.get(metric, ())]
        if optional:
            text += f"; better with {' and '.join(optional)}"
        lines.append(f"  {metric:8s} {text}")
    lines.append("  PSNR, SSIM need --reference videos, no weights")
    return "\n".join(lines)


def file_sha256(path: str | Path) -> str:
    """Hex sha256 of a file's bytes."""
    digest = hashlib.sha256()
    with Path(path).open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


@dataclass
class MetricNetworks:
    """Loaded networks by name (``inception``, ``i3d``, ``syncnet``, ``arcface``, ``s3fd``), why
    others are not, the face analysis, and the loaded files (path and sha256) by name."""

    models: dict[str, nn.Module] = field(default_factory=dict)
    missing: dict[str, dict[str, str]] = field(default_factory=dict)
    face: FaceAnalyzer | None = None  # None: built weight-free on first use
    files: dict[str, dict[str, str]] = field(default_factory=dict)

    @property
    def face_analyzer(self) -> FaceAnalyzer:
        """The face analysis (the weight-free fallback unless 3DDFA assets were loaded)."""
        if self.face is None:
            self.face = FaceAnalyzer(None)
        return self.face

    def get(self, name: str) -> nn.Module | None:
        return self.models.get(name)

    def missing_entry(self, name: str) -> dict[str, str]:
        """Why ``name`` is not loaded (``needs weights`` where nobody tried to load it)."""
        if name in self.missing:
            return self.missing[name]
        filename, url, _ = WEIGHT_FILES[name]
        return {"status": "needs weights", "file": filename, "get_it_from": url}


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
            nets.files[name] = {"file": str(path), "sha256": file_sha256(path)}
        except (RuntimeError, ValueError, OSError) as err:
            # A corrupt or wrong-layout file disables its metric only; strict loading says why.
            logger.warning("could not load %s: %s", path, err)
            nets.missing[name] = {
                "status": "weights failed to load",
                "file": str(path),
                "error": str(err)[:500],
            }
    _load_face(nets, root, device)
    return nets


def _load_face(nets: MetricNetworks, root: Path | None, device: torch.device | str) -> None:
    folder = root / FACE3D_DIRNAME if root is not None else None
    if folder is None or not (folder / DETECTOR_FILE).is_file():
        nets.missing["face3d"] = {
            "status": "not given: Haar boxes, no landmarks",
            "file": f"{FACE3D_DIRNAME}/ ({DETECTOR_FILE}, {' or '.join(CHECKPOINTS)}, stats)",
            "get_it_from": FACE3D_URL,
            "put_it_in": f"--weights-dir or ${WEIGHTS_ENV}",
        }
        return
    try:
        nets.face = FaceAnalyzer(folder, device)
    except (RuntimeError, ValueError, OSError) as err:
        logger.warning("could not load the 3DDFA assets in %s: %s", folder, err)
        nets.missing["face3d"] = {
            "status": "weights failed to load",
            "file": str(folder),
            "error": str(err)[:500],
        }
        return
    regressor = next(folder / n for n in CHECKPOINTS if (folder / n).is_file())
    for name, path in (
        ("face3d detector", folder / DETECTOR_FILE),
        ("face3d landmarks", regressor),
    ):
        nets.files[name] = {"file": str(path), "sha256": file_sha256(path)}
