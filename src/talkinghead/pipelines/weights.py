"""Finding the weights a generation needs, and building random-weight models for tests and timing.

``resolve_weights(path)`` accepts:

* a converted model directory (``model.json`` + components, see ``hub``);
* a folder of converted models (``dawn-128/``, ``dawn-256/``), picked by ``resolution``;
* an official download in the Hugging Face layout (``DAWN_128.pth``, ``LFG_128_*.pth``, ``pbnet/``),
  converted on first use into ``<cache>/models/<name>-<hash>/`` and reused after that.

HuBERT is looked up in ``hubert_path``, then beside the model (``hubert-large-ls960-ft/`` in the
model folder or its parent), then in the cache. The 3DDFA_V2 face assets likewise (``face3d/``); when
they are absent the pipeline falls back to a weight-free detector and says so.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path

import torch

from .. import hub
from ..configs import DawnConfig
from ..hub import DawnModules
from .motion import MOTION_DTYPE, MOTION_NETS

logger = logging.getLogger(__name__)

FACE3D_DIRNAME = "face3d"
RESOLUTIONS = (128, 256)


@dataclass(frozen=True)
class ResolvedWeights:
    """Where each part of a model lives on disk."""

    model_dir: Path  # a converted model directory (model.json + components)
    audio_features: str  # "hubert" or "logmel"
    hubert_dir: Path | None  # HuBERT folder (when audio_features == "hubert")
    face3d_dir: Path | None  # 3DDFA_V2 assets, or None for the weight-free fallback


def resolve_weights(
    path: str | Path,
    *,
    resolution: int | None = None,
    hubert_path: str | Path | None = None,
    face3d_dir: str | Path | None = None,
) -> ResolvedWeights:
    """Locate (and if needed convert) everything ``from_pretrained`` loads; clear errors otherwise."""
    if resolution is not None and resolution not in RESOLUTIONS:
        raise ValueError(f"resolution {resolution} is not supported: DAWN models exist at 128 and 256.")
    root = Path(path).expanduser()
    if not root.exists():
        raise hub.MissingFilesError(
            f"weights folder {root} does not exist; {hub.FETCH_HINT} "
            "(or pass --weights DIR / set TALKINGHEAD_HOME)."
        )
    model_dir = _model_dir(root, resolution)
    info = hub.read_model_json(model_dir)
    if resolution is not None and int(info["resolution"]) != resolution:
        raise ValueError(
            f"{model_dir} is a {info['resolution']}-pixel model, but resolution {resolution} was asked for."
        )
    audio_features = str(info.get("audio_features", "hubert"))
    hubert_dir = None
    if audio_features == "hubert":
        hubert_dir = _find_dir(
            hubert_path, [model_dir, model_dir.parent, root, hub.cache_dir() / "official"],
            hub.HUBERT_DIRNAME, what="HuBERT (facebook/hubert-large-ls960-ft)",
        )
    face3d = _find_dir(
        face3d_dir, [model_dir, model_dir.parent, root, hub.cache_dir()], FACE3D_DIRNAME,
        what="3DDFA_V2 face assets", required=False,
    )
    return ResolvedWeights(model_dir, audio_features, hubert_dir, face3d)


def _model_dir(root: Path, resolution: int | None) -> Path:
    if (root / hub.MODEL_FILE).is_file():
        return root
    converted = [root / f"dawn-{r}" for r in RESOLUTIONS if (root / f"dawn-{r}" / hub.MODEL_FILE).is_file()]
    if converted:
        return _pick(converted, resolution, root)
    if any(root.glob("DAWN_*.pth")) or any(root.glob("LFG_*.pth")):
        return _pick(_convert_cached(root, resolution), resolution, root)
    raise hub.MissingFilesError(
        f"{root} holds neither a talkinghead model (model.json) nor the official DAWN files "
        f"(DAWN_128.pth, LFG_128_1000ep.pth, pbnet/); {hub.FETCH_HINT}."
    )


def _pick(candidates: list[Path], resolution: int | None, root: Path) -> Path:
    if resolution is None:
        return candidates[0]
    for c in candidates:
        if c.name == f"dawn-{resolution}":
            return c
    raise hub.MissingFilesError(
        f"{root} has no {resolution}-pixel model; {hub.FETCH_HINT} with --resolution {resolution}."
    )


def _convert_cached(official: Path, resolution: int | None) -> list[Path]:
    """Convert an official folder once; later calls reuse the result (keyed by path, sizes, mtimes)."""
    from ..convert.dawn_official import convert_official_dir

    resolutions = (resolution,) if resolution else tuple(
        r for r in RESOLUTIONS if (official / f"DAWN_{r}.pth").is_file()
    )
    stamp = hashlib.sha256()
    stamp.update(str(official.resolve()).encode())
    for f in sorted(official.rglob("*")):
        if f.is_file() and f.suffix in (".pth", ".tar", ".yaml"):
            st = f.stat()
            stamp.update(f"{f.relative_to(official)}:{st.st_size}:{st.st_mtime_ns}".encode())
    out = hub.cache_dir() / "models" / f"official-{stamp.hexdigest()[:12]}"
    ready = [out / f"dawn-{r}" for r in resolutions if (out / f"dawn-{r}" / hub.MODEL_FILE).is_file()]
    if len(ready) == len(resolutions):
        return ready
    logger.info("converting the official weights in %s (once) into %s", official, out)
    return convert_official_dir(official, out, resolutions=resolutions)


def _find_dir(
    explicit: str | Path | None, places: list[Path], name: str, *, what: str, required: bool = True
) -> Path | None:
    if explicit is not None:
        p = Path(explicit).expanduser()
        if not p.is_dir():
            raise hub.MissingFilesError(f"{what} folder {p} does not exist.")
        return p
    for place in places:
        if (place / name).is_dir():
            return place / name
    if required:
        raise hub.MissingFilesError(
            f"{what} was not found next to the model ({places[0]}) or in the cache; "
            f"{hub.FETCH_HINT} or pass its folder explicitly."
        )
    return None


def random_modules(
    cfg: DawnConfig, *, seed: int = 0, device: str | torch.device = "cpu",
    dtype: torch.dtype = torch.float32,
) -> DawnModules:
    """All five networks of ``cfg`` with random (seeded) weights: for tests, demos of the plumbing
    and timing (the cost of a network does not depend on its weight values). ``dtype`` applies to
    all but PBNet, which stays float32 as in the pipeline."""
    from ..models.face_location import FaceLocationEncoder
    from ..models.flow_autoencoder import FlowAutoencoder
    from ..models.pose_blink_cvae import PoseBlinkCVAE
    from ..models.unet3d import UNet3D

    state = torch.random.get_rng_state()
    torch.manual_seed(seed)  # constructors draw from the global RNG; restored below
    try:
        modules = DawnModules(
            resolution=cfg.resolution,
            flow_ae=FlowAutoencoder(cfg.flow_ae),
            pose=PoseBlinkCVAE(cfg.pose),
            blink=PoseBlinkCVAE(cfg.blink),
            unet=UNet3D(cfg.unet),
            face_loc=FaceLocationEncoder(out_channels=cfg.unet.face_loc_channels),
        )
    finally:
        torch.random.set_rng_state(state)
    for name, m in modules.as_dict().items():
        # PBNet's random weights are not rounded either (motion.py: MOTION_DTYPE)
        m.to(device=device, dtype=MOTION_DTYPE if name in MOTION_NETS else dtype).eval()
    return modules


def save_random_model(cfg: DawnConfig, out_dir: str | Path, *, seed: int = 0,
                      audio_features: str = "hubert") -> Path:
    """Write a random-weight model directory in our format (tests, benchmarks)."""
    from ..hub import FaceLocConfig, save_component, write_model_json

    out = Path(out_dir)
    modules = random_modules(cfg, seed=seed)
    cfgs = {
        "flow_ae": cfg.flow_ae, "pose": cfg.pose, "blink": cfg.blink, "unet": cfg.unet,
        "face_loc": FaceLocConfig(out_channels=cfg.unet.face_loc_channels),
    }
    for name, module in modules.as_dict().items():
        save_component(module, cfgs[name], out / name, {"source_file": f"random seed {seed}"})
    write_model_json(out, cfg.resolution)
    info_file = out / hub.MODEL_FILE
    info = json.loads(info_file.read_text())
    info["audio_features"] = audio_features
    tmp = info_file.with_suffix(".tmp")
    tmp.write_text(json.dumps(info, indent=2) + "\n")
    os.replace(tmp, info_file)
    return out


def default_weights() -> Path:
    """The weights ``generate`` uses without ``--weights``: converted models in the cache, else the
    official download there (``talkinghead download``)."""
    for candidate in (hub.cache_dir() / "models", hub.cache_dir() / "official"):
        if candidate.is_dir() and (
            any((candidate / f"dawn-{r}" / hub.MODEL_FILE).is_file() for r in RESOLUTIONS)
            or any(candidate.glob("DAWN_*.pth"))
        ):
            return candidate
    raise hub.MissingFilesError(
        f"no DAWN weights in {hub.cache_dir()}; {hub.FETCH_HINT}, or pass --weights DIR."
    )
