"""Weights on disk: our component format, strict loading, the cache directory and official downloads.

A converted model is a directory (conventions §4, dawn_spec §0 for the component map)::

    dawn-128/
      model.json                 {"format": "talkinghead", "version": 1, "resolution": 128}
      flow_ae/  config.json  model.safetensors     LFG (FlowAutoencoder)
      pose/     config.json  model.safetensors     PBNet pose net (PoseBlinkCVAE, motion_dim=6)
      blink/    config.json  model.safetensors     PBNet blink net (PoseBlinkCVAE, motion_dim=2)
      unet/     config.json  model.safetensors     A2V-FDM denoiser (UNet3D)
      face_loc/ config.json  model.safetensors     face-location encoder (FaceLocationEncoder)

``config.json`` is ``configs.config_to_json(cfg)``; the safetensors metadata records where the weights came from
(``source_file``, ``source_sha256``, ``converter_version``). Modules are built on the meta device and filled with
``load_state_dict(strict=True, assign=True)``; a key mismatch raises a ``ValueError`` that lists the keys.

Official files come from the Hugging Face repositories ``Hanbo-Cheng/DAWN`` and ``facebook/hubert-large-ls960-ft``
(``download_official``); every LFS file is checked against the sha256 the Hub reports for it.
"""

from __future__ import annotations

import contextlib
import fnmatch
import hashlib
import importlib
import json
import logging
import os
import tempfile
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file
from torch import nn

from . import configs
from .difftalk import configs as difftalk_configs

logger = logging.getLogger(__name__)

FORMAT_NAME = "talkinghead"
FORMAT_VERSION = 1
COMPONENTS: tuple[str, ...] = ("flow_ae", "pose", "blink", "unet", "face_loc")
CONFIG_FILE = "config.json"
WEIGHTS_FILE = "model.safetensors"
MODEL_FILE = "model.json"

DAWN_REPO = "Hanbo-Cheng/DAWN"
HUBERT_REPO = "facebook/hubert-large-ls960-ft"
HUBERT_DIRNAME = "hubert-large-ls960-ft"
FETCH_HINT = "run `talkinghead download` to fetch the official weights"


@dataclass(frozen=True)
class FaceLocConfig:
    """Face-location encoder (official ``Face_loc_Encoder``): binary face box -> UNet input channels.

    ``FaceLocationEncoder`` takes plain keyword arguments; this record lets its directory carry a
    ``config.json`` like every other component.
    """

    out_channels: int = 16  # embedding channels (== UNet3DConfig.face_loc_channels)
    hidden_channels: int = 8  # channels after the first stride-2 convolution


# Config types defined here rather than in configs.py, by their config.json "type" name.
LOCAL_CONFIGS: dict[str, type] = {
    "FaceLocConfig": FaceLocConfig,
    "DiffTalkVQConfig": difftalk_configs.DiffTalkVQConfig,
    "DiffTalkUNetConfig": difftalk_configs.DiffTalkUNetConfig,
    "DiffTalkConditionConfig": difftalk_configs.DiffTalkConditionConfig,
}

# config type (the "type" field of config.json) -> (module, class) of the network it builds.
MODEL_CLASSES: dict[str, tuple[str, str]] = {
    "FlowAEConfig": ("talkinghead.models.flow_autoencoder", "FlowAutoencoder"),
    "PoseBlinkConfig": ("talkinghead.models.pose_blink_cvae", "PoseBlinkCVAE"),
    "UNet3DConfig": ("talkinghead.models.unet3d", "UNet3D"),
    "FaceLocConfig": ("talkinghead.models.face_location", "FaceLocationEncoder"),
    # DiffTalk: diffusers networks come from builder functions (called like a class with the config)
    "DiffTalkVQConfig": ("talkinghead.difftalk.networks", "build_first_stage"),
    "DiffTalkUNetConfig": ("talkinghead.difftalk.networks", "build_denoiser"),
    "DiffTalkConditionConfig": ("talkinghead.difftalk.conditioning", "ConditionEncoder"),
}
# networks whose constructor takes the config's fields as keyword arguments instead of the config
KWARG_CONSTRUCTED = frozenset({"FaceLocConfig"})


class MissingFilesError(FileNotFoundError):
    """Required weight files are absent; the message names them and the command that fetches them."""


def missing_files_error(
    missing: Iterable[str | Path], where: str | Path, hint: str
) -> MissingFilesError:
    names = ", ".join(str(m) for m in missing)
    return MissingFilesError(f"{where} is missing {names}; {hint}.")


# ----------------------------------------------------------------------------------------------- paths


def cache_dir() -> Path:
    """``$TALKINGHEAD_HOME``, else ``$XDG_CACHE_HOME/talkinghead``, else ``~/.cache/talkinghead``."""
    if home := os.environ.get("TALKINGHEAD_HOME"):
        return Path(home).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(xdg).expanduser() / "talkinghead"


def default_model_dir(name: str) -> Path:
    """Where a converted model called ``name`` (e.g. ``"dawn-128"``) lives in the cache."""
    return cache_dir() / "models" / name


def sha256_file(path: str | Path, chunk_size: int = 1 << 20) -> str:
    """Hex sha256 of a file, read in chunks (checkpoints are hundreds of MB)."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk_size):
            digest.update(block)
    return digest.hexdigest()


def atomic_write_text(path: str | Path, text: str) -> None:
    """Write ``text`` so that readers see either the old file or the complete new one."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


# ------------------------------------------------------------------------------------- building / loading


def model_class(cfg: Any) -> type[nn.Module]:
    """The network class a config object builds (looked up by the config's type name)."""
    kind = type(cfg).__name__
    if kind not in MODEL_CLASSES:
        raise ValueError(f"no network is registered for config type {kind!r}.")
    module_name, class_name = MODEL_CLASSES[kind]
    return getattr(importlib.import_module(module_name), class_name)


@contextlib.contextmanager
def _parameters_on_meta() -> Iterator[None]:
    # Parameters are created on the meta device (no memory, no random init); buffers stay real, because
    # non-persistent buffers (rotary frequencies, position tables) are not in any state dict and must be
    # computed by the constructor.
    register = nn.Module.register_parameter

    def register_on_meta(module: nn.Module, name: str, param: nn.Parameter | None) -> None:
        register(module, name, param)
        if param is not None:
            kind = type(param)
            module._parameters[name] = kind(param.to("meta"), requires_grad=param.requires_grad)

    nn.Module.register_parameter = register_on_meta  # type: ignore[method-assign]
    try:
        yield
    finally:
        nn.Module.register_parameter = register  # type: ignore[method-assign]


def build_empty(cfg: Any) -> nn.Module:
    """The network of ``cfg`` with its parameters on the meta device, ready for ``assign=True`` loading."""
    cls = model_class(cfg)
    with _parameters_on_meta():
        if type(cfg).__name__ in KWARG_CONSTRUCTED:
            return cls(**configs.config_to_dict(cfg))
        return cls(cfg)


def load_state_dict_strict(
    module: nn.Module, state_dict: dict[str, torch.Tensor], *, assign: bool = False, what: str = ""
) -> None:
    """``module.load_state_dict(state_dict, strict=True)`` with one readable ``ValueError`` on mismatch.

    Raises:
        ValueError: listing the missing keys, the unexpected keys and the shape mismatches.
    """
    expected = module.state_dict(keep_vars=True)
    missing = sorted(set(expected) - set(state_dict))
    unexpected = sorted(set(state_dict) - set(expected))
    mismatched = sorted(
        f"{k}: file {tuple(state_dict[k].shape)} vs model {tuple(expected[k].shape)}"
        for k in set(expected) & set(state_dict)
        if tuple(state_dict[k].shape) != tuple(expected[k].shape)
    )
    if missing or unexpected or mismatched:
        parts = [
            f"{label} ({len(keys)}): {', '.join(keys)}"
            for label, keys in (
                ("missing keys", missing),
                ("unexpected keys", unexpected),
                ("shape mismatches", mismatched),
            )
            if keys
        ]
        name = what or type(module).__name__
        raise ValueError(f"weights do not fit {name}: " + "; ".join(parts))
    module.load_state_dict(state_dict, strict=True, assign=assign)


def build_and_load(cfg: Any, state_dict: dict[str, torch.Tensor], *, what: str = "") -> nn.Module:
    """Build the network of ``cfg`` on meta and strictly assign ``state_dict`` into it (eval mode)."""
    model = build_empty(cfg)
    load_state_dict_strict(model, state_dict, assign=True, what=what)
    left_on_meta = [n for n, t in [*model.named_parameters(), *model.named_buffers()] if t.is_meta]
    if left_on_meta:
        raise ValueError(
            f"{what or type(model).__name__}: tensors not loaded: {', '.join(left_on_meta)}"
        )
    return model.eval()


# --------------------------------------------------------------------------------------- component files


def save_component(
    model: nn.Module, cfg: Any, directory: str | Path, metadata: dict[str, str] | None = None
) -> Path:
    """Write ``directory/config.json`` and ``directory/model.safetensors`` (each atomically).

    Args:
        model: the network; its full ``state_dict()`` is saved.
        cfg: the config dataclass it was built from.
        directory: the component directory (created if needed).
        metadata: string -> string, stored in the safetensors header (source_file, source_sha256, ...).
    Returns:
        The directory.
    """
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    state = model.state_dict()
    seen: set[int] = set()
    tensors: dict[str, torch.Tensor] = {}
    for key, value in state.items():
        tensor = value.detach().cpu().contiguous()
        # safetensors refuses tensors that share storage; shared weights are saved as copies.
        if tensor.data_ptr() in seen:
            tensor = tensor.clone()
        seen.add(tensor.data_ptr())
        tensors[key] = tensor
    meta = {"format": "pt", **{str(k): str(v) for k, v in (metadata or {}).items()}}
    fd, tmp = tempfile.mkstemp(dir=directory, prefix=f".{WEIGHTS_FILE}.", suffix=".tmp")
    os.close(fd)
    try:
        save_file(tensors, tmp, metadata=meta)
        os.replace(tmp, directory / WEIGHTS_FILE)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    atomic_write_text(directory / CONFIG_FILE, configs.config_to_json(cfg) + "\n")
    return directory


def read_config(directory: str | Path) -> Any:
    """The config object stored in ``directory/config.json``."""
    path = Path(directory) / CONFIG_FILE
    if not path.is_file():
        raise missing_files_error([CONFIG_FILE], directory, FETCH_HINT)
    text = path.read_text(encoding="utf-8")
    data = json.loads(text)
    local = LOCAL_CONFIGS.get(data.get("type"))
    if local is not None:
        data.pop("type")
        return configs.config_from_dict(local, data)
    return configs.config_from_json(text)


def read_metadata(directory: str | Path) -> dict[str, str]:
    """The safetensors header metadata of ``directory/model.safetensors``."""
    with safe_open(str(Path(directory) / WEIGHTS_FILE), framework="pt") as f:
        return dict(f.metadata() or {})


def load_component(
    directory: str | Path, device: str | torch.device = "cpu", dtype: torch.dtype | None = None
) -> nn.Module:
    """Build and load one component directory (``config.json`` + ``model.safetensors``), in eval mode.

    Args:
        directory: e.g. ``~/.cache/talkinghead/models/dawn-128/unet``.
        device: where the weights go.
        dtype: cast floating-point tensors to this dtype (None keeps the stored dtype).
    Raises:
        MissingFilesError: a file is absent. ValueError: the weights do not fit the config.
    """
    directory = Path(directory)
    missing = [n for n in (CONFIG_FILE, WEIGHTS_FILE) if not (directory / n).is_file()]
    if missing:
        raise missing_files_error(
            missing, directory, FETCH_HINT + " and `talkinghead convert official`"
        )
    cfg = read_config(directory)
    state = load_file(str(directory / WEIGHTS_FILE), device=str(device))
    if dtype is not None:
        state = {k: v.to(dtype) if v.is_floating_point() else v for k, v in state.items()}
    model = build_and_load(cfg, state, what=str(directory))
    # buffers the constructor computed (not in the file) follow the weights
    return model.to(device=device, dtype=dtype) if dtype is not None else model.to(device)


@dataclass
class DawnModules:
    """All networks of one converted model directory."""

    resolution: int  # frame size (square) the model works at
    flow_ae: nn.Module  # LFG
    pose: nn.Module  # PBNet pose net
    blink: nn.Module  # PBNet blink net
    unet: nn.Module  # A2V-FDM denoiser
    face_loc: nn.Module  # face-location encoder

    def as_dict(self) -> dict[str, nn.Module]:
        return {name: getattr(self, name) for name in COMPONENTS}


def read_model_json(path: str | Path) -> dict[str, Any]:
    """``path/model.json``, checked to be ours and of a version we read."""
    file = Path(path) / MODEL_FILE
    if not file.is_file():
        raise missing_files_error(
            [MODEL_FILE], path, FETCH_HINT + " and `talkinghead convert official`"
        )
    info = json.loads(file.read_text(encoding="utf-8"))
    if info.get("format") != FORMAT_NAME or info.get("version") != FORMAT_VERSION:
        raise ValueError(
            f"{file} is not a talkinghead v{FORMAT_VERSION} model (format={info.get('format')!r}, "
            f"version={info.get('version')!r})."
        )
    return info


def write_model_json(path: str | Path, resolution: int) -> None:
    info = {"format": FORMAT_NAME, "version": FORMAT_VERSION, "resolution": int(resolution)}
    atomic_write_text(Path(path) / MODEL_FILE, json.dumps(info, indent=2) + "\n")


def load_model_dir(
    path: str | Path, device: str | torch.device = "cpu", dtype: torch.dtype | None = None
) -> DawnModules:
    """Load every component of a converted model directory (see the module docstring for the layout)."""
    path = Path(path)
    info = read_model_json(path)
    missing = [
        f"{c}/{n}"
        for c in COMPONENTS
        for n in (CONFIG_FILE, WEIGHTS_FILE)
        if not (path / c / n).is_file()
    ]
    if missing:
        raise missing_files_error(missing, path, FETCH_HINT + " and `talkinghead convert official`")
    modules = {c: load_component(path / c, device=device, dtype=dtype) for c in COMPONENTS}
    return DawnModules(resolution=int(info["resolution"]), **modules)


# ------------------------------------------------------------------------------------------- downloads


def official_patterns(resolutions: Iterable[int]) -> dict[str, str]:
    """What to fetch from ``Hanbo-Cheng/DAWN``: description -> fnmatch pattern (``*`` also matches ``/``)."""
    patterns = {
        "PBNet pose checkpoint": "pbnet*/pose/checkpoint_*.pth.tar",
        "PBNet pose opt.yaml": "pbnet*/pose/opt.yaml",
        "PBNet blink checkpoint": "pbnet*/blink/checkpoint_*.pth.tar",
        "PBNet blink opt.yaml": "pbnet*/blink/opt.yaml",
    }
    for res in resolutions:
        if res not in (128, 256):
            raise ValueError(f"resolution={res} must be 128 or 256.")
        patterns[f"A2V-FDM {res}"] = f"DAWN_{res}.pth"
        patterns[f"LFG {res}"] = f"LFG_{res}_*.pth"
    return patterns


def _repo_files(repo_id: str, revision: str | None) -> dict[str, Any]:
    import huggingface_hub

    entries = huggingface_hub.list_repo_tree(repo_id, recursive=True, revision=revision)
    return {e.path: e for e in entries if getattr(e, "size", None) is not None}


def _select(files: Iterable[str], patterns: dict[str, str], repo_id: str) -> list[str]:
    files = sorted(files)
    chosen: list[str] = []
    unmatched = []
    for label, pattern in patterns.items():
        hits = [f for f in files if fnmatch.fnmatch(f, pattern)]
        if not hits:
            unmatched.append(f"{label} ({pattern})")
        chosen += [h for h in hits if h not in chosen]
    if unmatched:
        raise MissingFilesError(f"{repo_id} has no file for {', '.join(unmatched)}.")
    return chosen


def _verify_lfs(root: Path, entries: dict[str, Any], paths: Iterable[str]) -> None:
    for rel in paths:
        lfs = getattr(entries[rel], "lfs", None)
        if lfs is None:
            continue
        actual = sha256_file(root / rel)
        if actual != lfs.sha256:
            raise ValueError(
                f"{root / rel} has sha256 {actual} but the Hub lists {lfs.sha256}; delete it and download again."
            )


def _hubert_patterns(files: Iterable[str]) -> list[str]:
    files = list(files)
    # one copy of the weights is enough: prefer safetensors over the pickled .bin
    weights = [f for f in files if f.endswith(".safetensors")] or [
        f for f in files if f.endswith("pytorch_model.bin")
    ]
    if not weights:
        raise MissingFilesError(f"{HUBERT_REPO} has no model weights.")
    return sorted({*weights, *(f for f in files if f.endswith((".json", ".txt")) and "/" not in f)})


def download_official(
    dest: str | Path | None = None,
    *,
    resolution: int | Iterable[int] = (128, 256),
    revision: str | None = None,
    hubert: bool = True,
) -> Path:
    """Fetch the official DAWN checkpoints (and HuBERT) from the Hugging Face Hub.

    Layout of ``dest`` (the Hub layout, which ``talkinghead convert official`` reads)::

        DAWN_128.pth  LFG_128_1000ep.pth  DAWN_256.pth  LFG_256_400ep.pth
        pbnet/{pose,blink}/{checkpoint_*.pth.tar, opt.yaml}
        hubert-large-ls960-ft/{config.json, preprocessor_config.json, <weights>, ...}

    Args:
        dest: target directory; default ``cache_dir() / "official"``.
        resolution: 128, 256 or both.
        revision: a branch, tag or commit of ``Hanbo-Cheng/DAWN`` (None = main).
        hubert: also fetch ``facebook/hubert-large-ls960-ft``.
    Returns:
        ``dest``.
    """
    import huggingface_hub

    dest = Path(dest) if dest is not None else cache_dir() / "official"
    resolutions = (resolution,) if isinstance(resolution, int) else tuple(resolution)
    dest.mkdir(parents=True, exist_ok=True)

    entries = _repo_files(DAWN_REPO, revision)
    wanted = _select(entries, official_patterns(resolutions), DAWN_REPO)
    logger.info("downloading %s from %s into %s", ", ".join(wanted), DAWN_REPO, dest)
    huggingface_hub.snapshot_download(
        repo_id=DAWN_REPO, revision=revision, allow_patterns=wanted, local_dir=str(dest)
    )
    _verify_lfs(dest, entries, wanted)

    if hubert:
        hubert_entries = _repo_files(HUBERT_REPO, None)
        hubert_wanted = _hubert_patterns(hubert_entries)
        huggingface_hub.snapshot_download(
            repo_id=HUBERT_REPO, allow_patterns=hubert_wanted, local_dir=str(dest / HUBERT_DIRNAME)
        )
        _verify_lfs(dest / HUBERT_DIRNAME, hubert_entries, hubert_wanted)
    return dest
