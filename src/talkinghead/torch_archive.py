"""Read the tensors of a PyTorch zip archive (``torch.save`` / Lightning ``.ckpt``, TorchScript ``.pt``)
without running anything the file names.

``torch.jit.load`` executes an archive's code, and ``torch.load(weights_only=False)`` constructs whatever
classes its pickle names (Lightning checkpoints pickle callback state keyed by class, ``omegaconf``
hyper-parameters, numpy scalars; the Diffused Heads checkpoint a torchvision ``Compose``), while
``weights_only=True`` rightly refuses those. ``read_archive`` unpickles ``<root>/data.pkl`` with its own
restricted unpickler:

* tensors are rebuilt by our functions from the archive's raw storages (``torch._utils._rebuild_*``,
  ``torch.*Storage``, ``collections.OrderedDict`` and a few builtins are mapped to local code, never
  looked up); a tensor that needs anything else (quantized, sparse, ...) is refused with a sentence;
* the classes ``placeholders`` allows (module prefixes, or ``ANY_CLASS``) become inert ``Opaque``
  records: the module is never imported, nothing of it is called, its constructor arguments and state
  are kept as data;
* any other name (``os.system``, ``builtins.eval``, ...) is refused with a sentence naming it.

Only the zip format (torch >= 1.6) is read; legacy pickled files and big-endian archives are refused.
``module_tensors`` flattens a scripted module tree into the names ``state_dict()`` would give;
``tensor_state_dict`` checks a (Lightning) checkpoint's ``state_dict``.
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

# module prefixes whose classes become Opaque in a Lightning checkpoint (its metadata)
LIGHTNING_NAMESPACES: tuple[str, ...] = (
    "pytorch_lightning",
    "lightning",
    "lightning_fabric",
    "omegaconf",
    "numpy",
    "argparse",
    "pathlib",
)
ANY_CLASS = (
    None  # ``placeholders`` value: every class the pickle names becomes Opaque (TorchScript)
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


class ArchiveError(ValueError):
    """The file is not an archive whose tensors can be read safely; nothing from it was run."""


class Opaque(dict):
    """Stand-in for a class named by the pickle: records, never executes.

    Dict items set by the pickle (dict subclasses such as Lightning's ``AttributeDict``) stay readable as
    items; ``args`` holds constructor arguments and ``state`` what ``__setstate__`` received.
    """

    qualname = "?"
    args: tuple = ()
    state: Any = None

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__()
        self.args = args

    def __setstate__(self, state: Any) -> None:
        self.state = state

    def __repr__(self) -> str:
        return f"<opaque {self.qualname}>"


def _opaque(module: str, name: str) -> type[Opaque]:
    return type(name, (Opaque,), {"qualname": f"{module}.{name}"})


class _StorageType:
    def __init__(self, dtype: torch.dtype) -> None:
        self.dtype = dtype


def _rebuild_tensor(storage: Tensor, offset: int, size: Any, stride: Any, *_: Any) -> Tensor:
    # a compact copy: the tensor owns its memory, whatever else shares the storage
    return storage.as_strided(tuple(size), tuple(stride), offset).clone()


def _rebuild_parameter(data: Tensor, *_: Any) -> Tensor:
    return data


def _rebuild_from_type(func: Any, new_type: Any, args: tuple, state: Any) -> Any:
    return func(*args)


def _reconstructor(cls: Any, base: Any, state: Any = None) -> Any:
    return cls() if isinstance(cls, type) and issubclass(cls, Opaque) else Opaque()


_CALLABLES: dict[tuple[str, str], Any] = {
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


class _TensorOnlyUnpickler(pickle.Unpickler):
    def __init__(
        self,
        archive: zipfile.ZipFile,
        root: str,
        name: str,
        placeholders: tuple[str, ...] | None,
    ) -> None:
        super().__init__(io.BytesIO(archive.read(f"{root}data.pkl")))
        self.archive, self.root, self.name, self.placeholders = archive, root, name, placeholders
        self.storages: dict[str, Tensor] = {}

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) in _CALLABLES:
            return _CALLABLES[(module, name)]
        if module == "torch" and name in _STORAGE_DTYPES:
            return _StorageType(_STORAGE_DTYPES[name])
        if module == "torch" and isinstance(getattr(torch, name, None), torch.dtype):
            return getattr(torch, name)
        if module.startswith(("torch._utils", "torch._tensor")):
            raise ArchiveError(
                f"{self.name} stores tensors with {module}.{name}, which the safe reader does not "
                "rebuild; re-save the weights as plain float tensors (torch.save(model.state_dict()))."
            )
        if self.placeholders is ANY_CLASS or module.split(".")[0] in self.placeholders:
            return _opaque(module, name)
        raise ArchiveError(
            f"{self.name} refers to {module}.{name}, which is neither a tensor nor checkpoint "
            "metadata; refusing to read it (only checkpoints of tensors are accepted)."
        )

    def persistent_load(self, pid: Any) -> Tensor:
        if not (isinstance(pid, tuple) and len(pid) >= 5 and pid[0] == "storage"):
            raise ArchiveError(f"{self.name} references data as {pid!r}; only storages are read.")
        storage_type, key, numel = pid[1], str(pid[2]), pid[4]
        if not isinstance(storage_type, _StorageType):
            raise ArchiveError(f"{self.name} holds a storage of unsupported type {storage_type!r}.")
        if key not in self.storages:
            record = f"{self.root}data/{key}"
            try:
                raw = bytearray(self.archive.read(record))
            except KeyError:
                raise ArchiveError(f"{self.name} lacks the storage record {record}.") from None
            dtype = storage_type.dtype
            flat = torch.frombuffer(raw, dtype=dtype) if raw else torch.empty(0, dtype=dtype)
            if flat.numel() < numel:
                raise ArchiveError(f"{self.name}: storage {key} is truncated.")
            self.storages[key] = flat
        return self.storages[key]


def read_archive(path: str | Path, placeholders: tuple[str, ...] | None = ANY_CLASS) -> Any:
    """The unpickled ``data.pkl`` of a PyTorch zip archive, tensors rebuilt and nothing run.

    Args:
        placeholders: module prefixes whose classes become ``Opaque`` records (``LIGHTNING_NAMESPACES``
            for a Lightning checkpoint), or ``ANY_CLASS``; a class from elsewhere is refused.
    Raises:
        ArchiveError: not a zip archive, big-endian, a refused class, or tensors that cannot be
            rebuilt safely.
    """
    path = Path(path)
    if not zipfile.is_zipfile(path):
        raise ArchiveError(
            f"{path} is not a PyTorch zip archive (legacy pickled files are not read, since reading "
            "them could run code); re-save it with a current torch.save or pass a .safetensors file."
        )
    with zipfile.ZipFile(path) as archive:
        names = archive.namelist()
        pickles = [
            n for n in names if n == "data.pkl" or n.endswith("/data.pkl") and n.count("/") == 1
        ]
        if len(pickles) != 1:
            raise ArchiveError(
                f"{path} has no single <root>/data.pkl; it is not a PyTorch archive."
            )
        root = pickles[0][: -len("data.pkl")]
        order = f"{root}byteorder"
        if order in names and archive.read(order).strip() != b"little":
            raise ArchiveError(
                f"{path} was saved big-endian; re-save it on a little-endian machine."
            )
        try:
            return _TensorOnlyUnpickler(archive, root, path.name, placeholders).load()
        except ArchiveError:
            raise
        except (pickle.UnpicklingError, EOFError, KeyError, TypeError, RuntimeError) as err:
            raise ArchiveError(f"{path}: its data.pkl cannot be read safely ({err}).") from err


def read_checkpoint(path: str | Path) -> Any:
    """A Lightning / ``torch.save`` checkpoint: usually a dict (``state_dict``, ``epoch``, ...) whose
    Lightning metadata are ``Opaque`` records; any class outside ``LIGHTNING_NAMESPACES`` is refused."""
    return read_archive(path, LIGHTNING_NAMESPACES)


def is_torchscript(path: str | Path) -> bool:
    """Whether the zip archive holds TorchScript code (``<root>/code/``)."""
    with zipfile.ZipFile(path) as archive:
        return any(n.split("/", 2)[1:2] == ["code"] for n in archive.namelist())


def module_tensors(obj: Any, prefix: str = "") -> dict[str, Tensor]:
    """Every tensor of a scripted module tree, by dotted attribute path (the ``state_dict`` names)."""
    out: dict[str, Tensor] = {}
    state = obj.state if isinstance(obj, Opaque) else obj
    if not isinstance(state, dict):
        return out
    for name, value in state.items():
        if isinstance(value, Tensor):
            out[prefix + str(name)] = value
        elif isinstance(value, Opaque):
            out.update(module_tensors(value, f"{prefix}{name}."))
    return out


def tensor_state_dict(obj: Any, source: str = "checkpoint") -> dict[str, Tensor]:
    """``obj["state_dict"]`` (Lightning) or ``obj`` itself, checked to map names to tensors only."""
    state = obj.get("state_dict", obj) if isinstance(obj, dict) else obj
    if not isinstance(state, dict):
        raise ValueError(f"{source} holds no state_dict of tensors.")  # noqa: TRY004 (bad file, not bad call)
    bad = sorted(str(k) for k, v in state.items() if not isinstance(v, Tensor))
    if bad:
        raise ValueError(f"{source}'s state_dict has non-tensor entries: {', '.join(bad[:10])}.")
    return dict(state)
