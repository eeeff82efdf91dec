"""Networks on disk: one component = ``config.json`` + ``model.safetensors``, loaded strictly.

``config.json`` holds the config dataclass the network is built from, with its type name
(``{"type": "UNet3DConfig", ...fields}``); ``families.component_classes`` maps the type name to the
config and network classes, so every family's components load through these functions. The
safetensors metadata records where the weights came from (``source_file``, ``source_sha256``,
``converter_version``). Networks are built on the meta device and filled with
``load_state_dict(strict=True, assign=True)``; a key mismatch raises a ``ValueError`` that lists the keys.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import typing
from collections.abc import Iterable
from pathlib import Path
from typing import Any, TypeVar

import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file
from torch import nn
from torch.overrides import TorchFunctionMode

from talkinghead.families import component_classes
from talkinghead.files import atomic_output, atomic_write_text

T = TypeVar("T")

CONFIG_FILE = "config.json"
WEIGHTS_FILE = "model.safetensors"
HALF_DTYPES = (torch.float16, torch.bfloat16)  # stored to save space, computed in float32
FETCH_HINT = "run `talkinghead download` to fetch the official weights"


class MissingFilesError(FileNotFoundError):
    """Required weight files are absent; the message names them and the command that fetches them."""


def missing_files_error(
    missing: Iterable[str | Path], where: str | Path, hint: str
) -> MissingFilesError:
    names = ", ".join(str(m) for m in missing)
    return MissingFilesError(f"{where} is missing {names}; {hint}.")


def sha256_file(path: str | Path, chunk_size: int = 1 << 20) -> str:
    """Hex sha256 of a file, read in chunks (checkpoints are hundreds of MB)."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk_size):
            digest.update(block)
    return digest.hexdigest()


# ------------------------------------------------------------------------------------------- configs


def config_to_dict(cfg: Any) -> dict[str, Any]:
    """A JSON-ready dict of a (nested) config dataclass."""
    return dataclasses.asdict(cfg)


def config_from_dict(cls: type[T], data: dict[str, Any]) -> T:
    """Rebuild a config dataclass from ``config_to_dict`` output; unknown keys raise."""
    names = {f.name for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    unknown = sorted(set(data) - names)
    if unknown:
        raise ValueError(f"{cls.__name__} has no field(s) {unknown}; the config.json is not ours.")
    hints = typing.get_type_hints(cls)
    kwargs: dict[str, Any] = {}
    for name, value in data.items():
        if dataclasses.is_dataclass(hints[name]) and isinstance(value, dict):
            value = config_from_dict(hints[name], value)
        elif isinstance(value, list):
            value = tuple(value)
        kwargs[name] = value
    return cls(**kwargs)


def config_to_json(cfg: Any) -> str:
    """``config.json`` text: the type name and every field."""
    return json.dumps({"type": type(cfg).__name__, **config_to_dict(cfg)}, indent=2)


def config_from_json(text: str) -> Any:
    """The config object of a ``config.json`` text (any registered family's type)."""
    data = json.loads(text)
    config_cls, _ = component_classes(data.pop("type", None))
    return config_from_dict(config_cls, data)


# ------------------------------------------------------------------------------------- building / loading


class _SkipParameterInit(TorchFunctionMode):
    """While a network is built for loading, in-place writes to its parameters (``nn.init.*``,
    ``uniform_``, ``zero_``, ...; ``requires_grad_`` still applies) do nothing: strict loading
    replaces every parameter right after, so the constructors' random initialisation is wasted work. Buffers are computed as usual (non-persistent ones, rotary
    frequencies and position tables, are in no state dict). A torch function mode is thread-local, so
    a network built meanwhile in another thread is initialised as usual. (Parameters on the meta device
    would skip the work too, but the first meta operation of a process imports torch._dynamo: about
    1 s of every command's start-up, benchmarks/RESULTS.md run 24.)"""

    def __torch_function__(
        self, func: Any, types: Any, args: tuple = (), kwargs: dict | None = None
    ) -> Any:
        name = getattr(func, "__name__", "")
        writes = name.endswith("_") and not name.startswith("_") and name != "requires_grad_"
        if writes and args and isinstance(args[0], nn.Parameter):
            return args[0]
        return func(*args, **(kwargs or {}))


def build_empty(cfg: Any) -> nn.Module:
    """The network of ``cfg`` with uninitialised parameters, ready for ``assign=True`` loading."""
    _, cls = component_classes(type(cfg).__name__)
    with _SkipParameterInit():
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
    """Build the network of ``cfg`` and strictly assign ``state_dict`` into it (eval mode)."""
    model = build_empty(cfg)
    load_state_dict_strict(model, state_dict, assign=True, what=what)
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
    with atomic_output(directory / WEIGHTS_FILE) as tmp:
        save_file(tensors, str(tmp), metadata=meta)
    atomic_write_text(directory / CONFIG_FILE, config_to_json(cfg) + "\n")
    return directory


def store_half(path: str | Path) -> int:
    """Rewrite the weights of a component directory, or of every component of a model directory, in
    float16 (shipped models: half the bytes; ``load_component`` computes in float32 again). Integer
    tensors and the safetensors metadata are kept; each file is replaced atomically. Returns the
    bytes saved."""
    path, saved = Path(path), 0
    own = path / WEIGHTS_FILE
    for weights in [own] if own.is_file() else sorted(path.glob(f"*/{WEIGHTS_FILE}")):
        before = weights.stat().st_size
        with safe_open(str(weights), framework="pt") as f:
            meta = f.metadata() or {}
        tensors = {k: v.half() if v.is_floating_point() else v for k, v in load_file(weights).items()}
        with atomic_output(weights) as tmp:
            save_file(tensors, str(tmp), metadata=meta)
        saved += before - weights.stat().st_size
    return saved


def read_config(directory: str | Path) -> Any:
    """The config object stored in ``directory/config.json``."""
    path = Path(directory) / CONFIG_FILE
    if not path.is_file():
        raise missing_files_error([CONFIG_FILE], directory, FETCH_HINT)
    return config_from_json(path.read_text(encoding="utf-8"))


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
        dtype: cast floating-point tensors to this dtype (None: float32 for weights stored in half
            precision, ``store_half``; any other stored dtype is kept).
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
    else:
        state = {k: v.float() if v.dtype in HALF_DTYPES else v for k, v in state.items()}
    model = build_and_load(cfg, state, what=str(directory))
    # buffers the constructor computed (not in the file) follow the weights
    return model.to(device=device, dtype=dtype) if dtype is not None else model.to(device)
