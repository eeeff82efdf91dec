"""Read the tensors of a PyTorch / PyTorch-Lightning ``.ckpt`` without running any code from it.

Lightning checkpoints (LDM, DiffTalk, Stable Diffusion 1.x) pickle more than tensors: callback
state keyed by the callback's class (``pytorch_lightning.callbacks.model_checkpoint.ModelCheckpoint``),
hyper-parameters (``omegaconf`` containers, ``argparse.Namespace``), numpy scalars. ``torch.load(...,
weights_only=True)`` rightly refuses those, and ``weights_only=False`` would import and call them.

``read_checkpoint`` unpickles the archive's ``data.pkl`` with its own restricted unpickler:

* tensors are rebuilt by our functions from the raw storage records (``torch._utils._rebuild_*``,
  ``torch.*Storage``, ``collections.OrderedDict`` are mapped to local code, never looked up);
* names from Lightning's metadata namespaces (``LIGHTNING_NAMESPACES``) become inert ``Opaque``
  placeholders: the module is never imported, nothing of it is called;
* any other name (``os.system``, ``builtins.eval``, ...) is refused with a ``ValueError`` naming it.

Only the zip archive format (torch >= 1.6) is read; the legacy tar format is refused.
"""

from __future__ import annotations

import collections
import io
import pickle
import zipfile
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

# (module prefix) -> names from here become Opaque placeholders (Lightning checkpoint metadata)
LIGHTNING_NAMESPACES: tuple[str, ...] = (
    "pytorch_lightning",
    "lightning",
    "lightning_fabric",
    "omegaconf",
    "numpy",
    "argparse",
    "pathlib",
)

_STORAGE_DTYPES: dict[str, torch.dtype] = {
    "FloatStorage": torch.float32,
    "DoubleStorage": torch.float64,
    "HalfStorage": torch.float16,
    "BFloat16Storage": torch.bfloat16,
    "LongStorage": torch.int64,
    "IntStorage": torch.int32,
    "ShortStorage": torch.int16,
    "CharStorage": torch.int8,
    "ByteStorage": torch.uint8,
    "BoolStorage": torch.bool,
    "UntypedStorage": torch.uint8,
}


class Opaque:
    """Stand-in for a non-tensor object of a checkpoint; remembers only the name it was pickled as."""

    name = "?"

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        pass

    def __setstate__(self, state: Any) -> None:
        pass

    def __repr__(self) -> str:
        return f"<opaque {self.name}>"


def _opaque_class(name: str) -> type:
    return type("Opaque", (Opaque,), {"name": name})


class _StorageType:
    def __init__(self, dtype: torch.dtype):
        self.dtype = dtype


def _rebuild_tensor(storage: Tensor, offset: int, size: Any, stride: Any, *_: Any) -> Tensor:
    return torch.as_strided(storage, tuple(size), tuple(stride), offset)


def _rebuild_parameter(data: Tensor, *_: Any) -> Tensor:
    return data


def _rebuild_from_type(func: Any, new_type: Any, args: tuple, state: Any) -> Any:
    return func(*args)


def _reconstructor(cls: Any, base: Any, state: Any = None) -> Any:
    return cls() if isinstance(cls, type) and issubclass(cls, Opaque) else Opaque()


_TENSOR_GLOBALS: dict[tuple[str, str], Any] = {
    ("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor,
    ("torch._utils", "_rebuild_tensor"): _rebuild_tensor,
    ("torch._utils", "_rebuild_parameter"): _rebuild_parameter,
    ("torch._utils", "_rebuild_parameter_with_state"): _rebuild_parameter,
    ("torch._tensor", "_rebuild_from_type_v2"): _rebuild_from_type,
    ("torch.nn.parameter", "Parameter"): _rebuild_parameter,
    ("collections", "OrderedDict"): collections.OrderedDict,
    ("builtins", "set"): set,
    ("builtins", "frozenset"): frozenset,
    ("builtins", "slice"): slice,
    ("copyreg", "_reconstructor"): _reconstructor,
    ("torch", "Size"): tuple,
    ("torch", "device"): str,
}


class _TensorUnpickler(pickle.Unpickler):
    def __init__(self, data: bytes, records: dict[str, bytes], source: str):
        super().__init__(io.BytesIO(data))
        self.records = records
        self.source = source
        self.storages: dict[str, Tensor] = {}

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) in _TENSOR_GLOBALS:
            return _TENSOR_GLOBALS[(module, name)]
        if module == "torch" and name in _STORAGE_DTYPES:
            return _StorageType(_STORAGE_DTYPES[name])
        if module == "torch" and isinstance(getattr(torch, name, None), torch.dtype):
            return getattr(torch, name)
        if module.split(".")[0] in LIGHTNING_NAMESPACES:
            return _opaque_class(f"{module}.{name}")
        raise pickle.UnpicklingError(
            f"{self.source} refers to {module}.{name}, which is neither a tensor nor Lightning "
            "metadata; refusing to read it (only checkpoints of tensors are accepted)."
        )

    def persistent_load(self, pid: Any) -> Tensor:
        if not (isinstance(pid, tuple) and pid and pid[0] == "storage"):
            raise pickle.UnpicklingError(f"{self.source} has an unknown persistent record {pid!r}.")
        storage_type, key = pid[1], str(pid[2])
        dtype = storage_type.dtype if isinstance(storage_type, _StorageType) else None
        if dtype is None:
            raise pickle.UnpicklingError(f"{self.source} stores an unknown storage type.")
        if key not in self.storages:
            if key not in self.records:
                raise pickle.UnpicklingError(f"{self.source} lacks the storage record {key}.")
            raw = bytearray(self.records[key])
            self.storages[key] = (
                torch.frombuffer(raw, dtype=dtype) if raw else torch.empty(0, dtype=dtype)
            )
        return self.storages[key]


def read_checkpoint(path: str | Path) -> Any:
    """The unpickled content of a torch zip checkpoint, tensors rebuilt and nothing else run.

    Returns:
        Usually a dict (a Lightning ``.ckpt``: ``state_dict``, ``epoch``, ...); non-tensor objects
        from Lightning's namespaces are ``Opaque`` placeholders.
    Raises:
        ValueError: the file is not a torch zip archive, is big-endian, or refers to code outside
            the tensor machinery and Lightning's metadata.
    """
    path = Path(path)
    if not zipfile.is_zipfile(path):
        raise ValueError(
            f"{path} is not a torch zip checkpoint (legacy pre-1.6 files and other formats are not "
            "read); re-save it with torch.save or pass a .safetensors file."
        )
    with zipfile.ZipFile(path) as archive:
        names = archive.namelist()
        pkl = next((n for n in names if n.endswith("/data.pkl") or n == "data.pkl"), None)
        if pkl is None:
            raise ValueError(f"{path} is a zip file without data.pkl, so not a torch checkpoint.")
        root = pkl[: -len("data.pkl")]
        order = root + "byteorder"
        if order in names and archive.read(order).decode().strip() != "little":
            raise ValueError(f"{path} was saved big-endian; re-save it on a little-endian machine.")
        prefix = root + "data/"
        records = {n[len(prefix) :]: archive.read(n) for n in names if n.startswith(prefix)}
        unpickler = _TensorUnpickler(archive.read(pkl), records, str(path))
        try:
            return unpickler.load()
        except pickle.UnpicklingError as err:
            raise ValueError(str(err)) from None


def tensor_state_dict(obj: Any, source: str = "checkpoint") -> dict[str, Tensor]:
    """``obj["state_dict"]`` (Lightning) or ``obj`` itself, checked to map names to tensors only."""
    state = obj.get("state_dict", obj) if isinstance(obj, dict) else obj
    if not isinstance(state, dict):
        raise ValueError(f"{source} holds no state_dict of tensors.")  # noqa: TRY004 (bad file, not bad call)
    bad = sorted(str(k) for k, v in state.items() if not isinstance(v, Tensor))
    if bad:
        raise ValueError(f"{source}'s state_dict has non-tensor entries: {', '.join(bad[:10])}.")
    return dict(state)
