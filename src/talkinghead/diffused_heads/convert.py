"""Official Diffused Heads files -> our model directory (diffusedheads_spec.md §3).

Accepted sources (a file, or a folder holding them):

* ``crema_script.pt`` - the TorchScript UNet of the main branch;
* ``audio_encoder.pt`` - the TorchScript SDA-style audio encoder (optional: without it the model
  directory has no audio encoder and the pipeline refuses raw audio);
* a train-branch PyTorch-Lightning ``*.ckpt`` - the UNet twice (``unet.``, ``diffusion.nn_backbone.``:
  checked equal, one kept) and ``hyper_parameters`` (read as data only: the pickled torchvision
  ``Compose`` stays an inert record);
* a ``*.safetensors`` UNet state dict with official names (e.g. ../shared/golden/diffusedheads), whose
  metadata may carry the official constructor arguments as ``json`` -> ``unet_kwargs``.

Every archive is read by ``archive.read_archive`` (tensors only, no code). Keys are loaded strictly;
missing and unexpected keys are listed. Output::

    out_dir/
      model_index.json       family "diffused-heads"
      unet/                  config.json + model.safetensors (source_file, source_sha256, converter_version)
      audio_encoder/         config.json + model.safetensors (when an encoder was given)
"""

from __future__ import annotations

import dataclasses
import json
import logging
from pathlib import Path
from typing import Any

from safetensors import safe_open
from safetensors.torch import load_file
from torch import Tensor

from talkinghead import checkpoints
from talkinghead.diffused_heads.configs import (
    PRESETS,
    AudioEncoderConfig,
    DiffusedHeadsConfig,
    DiffusedHeadsUNetConfig,
)
from talkinghead.diffused_heads.official_keys import (
    audio_state_dict,
    build_audio_encoder,
    build_unet,
    lightning_unet_state_dict,
    shapes_match,
    unet_config_from_official_kwargs,
    unet_config_from_state_dict,
    unet_state_dict,
)
from talkinghead.files import atomic_directory
from talkinghead.model_index import ModelIndex, write_model_index
from talkinghead.torch_archive import Opaque, is_torchscript, module_tensors, read_archive

logger = logging.getLogger(__name__)

FAMILY = "diffused-heads"
CONVERTER_VERSION = "1"
UNET_FILES = ("crema_script.pt",)
AUDIO_FILES = ("audio_encoder.pt",)
AUDIO_FEATURES = "sda"


def _metadata(path: Path, component: str) -> dict[str, str]:
    return {
        "component": component,
        "source_file": path.name,
        "source_sha256": checkpoints.sha256_file(path),
        "converter_version": CONVERTER_VERSION,
    }


def _hyper_parameters(checkpoint: dict[str, Any]) -> dict[str, Any]:
    hp = checkpoint.get("hyper_parameters") or {}
    if isinstance(hp, Opaque):  # an AttributeDict or similar: its items are plain data
        hp = dict(hp.items()) or (hp.state if isinstance(hp.state, dict) else {})
    return dict(hp) if isinstance(hp, dict) else {}


def read_unet(
    path: str | Path, base: DiffusedHeadsUNetConfig | None = None
) -> tuple[dict[str, Tensor], DiffusedHeadsUNetConfig]:
    """Official UNet weights (our key names) and their config from any accepted source file.

    ``base`` supplies what the file cannot tell (image size, head width, GroupNorm groups); default:
    the first preset (CREMA, golden, tiny) whose network fits the tensors.
    """
    path = Path(path)
    if path.suffix == ".safetensors":
        state = unet_state_dict(load_file(str(path)))
        with safe_open(str(path), framework="pt") as f:
            meta = json.loads((f.metadata() or {}).get("json", "{}"))
        return state, _architecture(state, base, meta.get("unet_kwargs"))
    root = read_archive(path)
    if is_torchscript(path):
        state = unet_state_dict(module_tensors(root))
        return state, _architecture(state, base)
    if not isinstance(root, dict) or "state_dict" not in root:
        raise ValueError(
            f"{path} is neither a TorchScript UNet nor a Lightning checkpoint with a state_dict."
        )
    state = lightning_unet_state_dict(root["state_dict"])
    return state, _architecture(state, base, _hyper_parameters(root))


def _architecture(
    state: dict[str, Tensor],
    base: DiffusedHeadsUNetConfig | None,
    kwargs: dict[str, Any] | None = None,
) -> DiffusedHeadsUNetConfig:
    """The architecture the official constructor arguments (``kwargs``) or else the shapes describe,
    completed by ``base`` or by the first preset that fits; if none fits, the first candidate (whose
    strict load then lists the keys that do not fit)."""
    bases = [base] if base is not None else [p.unet for p in PRESETS.values()]
    for candidate in bases:
        if kwargs:
            cfg = unet_config_from_official_kwargs(kwargs, candidate)
        else:
            try:
                cfg = unet_config_from_state_dict(state, candidate)
            except ValueError:
                continue
        if shapes_match(cfg, state):
            return cfg
    return unet_config_from_official_kwargs(kwargs, bases[0]) if kwargs else bases[0]


def audio_config_from_state_dict(state: dict[str, Tensor]) -> AudioEncoderConfig:
    """Widths of an SDA-style encoder from its tensor shapes (window timing stays the official one)."""
    try:
        convs = sorted(
            int(k.split(".")[2])
            for k in state
            if k.startswith("encoder.cl.") and k.endswith(".weight")
        )
        layers = 1 + max(
            int(k.rsplit("_l", 1)[1]) for k in state if k.startswith("rnn.weight_ih_l")
        )
        return dataclasses.replace(
            AudioEncoderConfig(),
            num_feature_maps=state["encoder.cl.0.weight"].shape[0],
            code_size=state[f"encoder.cl.{convs[-1]}.weight"].shape[0],
            hidden_size=state["rnn.weight_hh_l0"].shape[1],
            num_layers=layers,
        )
    except (KeyError, ValueError, IndexError) as err:
        names = ", ".join(sorted(state)[:12])
        raise ValueError(
            f"the audio encoder's tensors do not look like an SDA encoder (encoder.cl.*, rnn.*); found: {names}"
        ) from err


def read_audio_encoder(path: str | Path) -> tuple[dict[str, Tensor], AudioEncoderConfig]:
    """A TorchScript SDA-style encoder's weights (our key names) and config."""
    path = Path(path)
    root = read_archive(path)
    state = audio_state_dict(module_tensors(root) if is_torchscript(path) else root)
    return state, audio_config_from_state_dict(state)


def find_sources(src: Path) -> tuple[Path, Path | None]:
    """(UNet file, audio encoder file or None) from a file or a folder."""
    if src.is_file():
        return src, None
    if not src.is_dir():
        raise FileNotFoundError(
            f"{src} does not exist; pass crema_script.pt, a .ckpt or their folder."
        )
    unet = next((src / n for n in UNET_FILES if (src / n).is_file()), None)
    unet = (
        unet
        or next(iter(sorted(src.glob("*.ckpt"))), None)
        or next(iter(sorted(src.glob("*.safetensors"))), None)
    )
    if unet is None:
        raise FileNotFoundError(f"{src} holds no crema_script.pt, *.ckpt or *.safetensors UNet.")
    audio = next((src / n for n in AUDIO_FILES if (src / n).is_file()), None)
    return unet, audio


def convert(
    src: str | Path,
    out_dir: str | Path,
    *,
    audio_encoder: str | Path | None = None,
    base: DiffusedHeadsUNetConfig | None = None,
) -> Path:
    """Convert official files into a model directory (written atomically; an existing one is replaced).

    Args:
        src: ``crema_script.pt``, a Lightning ``.ckpt``, a UNet ``.safetensors``, or a folder with them
            (and ``audio_encoder.pt``).
        out_dir: the model directory to write.
        audio_encoder: the TorchScript audio encoder, when not inside ``src``.
        base: image size, head width and GroupNorm groups the files cannot tell (default: the
            first preset that fits).
    Returns:
        ``out_dir``.
    """
    src, out = Path(src), Path(out_dir)
    unet_path, audio_path = find_sources(src)
    audio_path = Path(audio_encoder) if audio_encoder is not None else audio_path
    state, unet_cfg = read_unet(unet_path, base)
    unet = build_unet(state, unet_cfg, what=str(unet_path))
    parts: dict[str, tuple[Any, Any, dict[str, str]]] = {
        "unet": (unet, unet_cfg, _metadata(unet_path, "unet"))
    }
    audio_cfg = dataclasses.replace(AudioEncoderConfig(), hidden_size=unet_cfg.model_channels)
    if audio_path is not None:
        a_state, audio_cfg = read_audio_encoder(audio_path)
        if audio_cfg.hidden_size != unet_cfg.audio_dim:
            raise ValueError(
                f"the audio encoder gives {audio_cfg.hidden_size}-d embeddings but the UNet expects {unet_cfg.audio_dim}."
            )
        encoder = build_audio_encoder(a_state, audio_cfg, what=str(audio_path))
        parts["audio_encoder"] = (encoder, audio_cfg, _metadata(audio_path, "audio_encoder"))
    model_cfg = DiffusedHeadsConfig(
        resolution=unet_cfg.image_size, unet=unet_cfg, audio_encoder=audio_cfg
    )
    write_model_dir(out, parts, model_cfg)
    logger.info("wrote %s (%s)", out, ", ".join(parts))
    return out


def write_model_dir(
    out: Path, parts: dict[str, tuple[Any, Any, dict[str, str]]], config: DiffusedHeadsConfig
) -> Path:
    """Write components ``{name: (module, config, metadata)}`` and model_index.json atomically
    (``files.atomic_directory``: an existing ``out`` is replaced)."""
    with atomic_directory(out) as tmp:
        for name, (model, cfg, meta) in parts.items():
            checkpoints.save_component(model, cfg, tmp / name, meta)
        index = ModelIndex(FAMILY, {n: n for n in parts}, AUDIO_FEATURES, pipeline_config(config))
        write_model_index(tmp, index)
    return Path(out)


def pipeline_config(cfg: DiffusedHeadsConfig) -> dict[str, Any]:
    """The ``config`` entry of model_index.json: everything but the per-component architectures."""
    data = dataclasses.asdict(cfg)
    data.pop("unet"), data.pop("audio_encoder")
    return data
