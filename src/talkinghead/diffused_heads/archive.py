"""Read the tensors of a PyTorch zip archive (TorchScript ``.pt`` or ``torch.save`` / Lightning ``.ckpt``)
without running anything the file names.

``torch.jit.load`` executes the archive's code and ``torch.load(weights_only=False)`` constructs whatever
classes its pickle names (the Diffused Heads Lightning checkpoint pickles a torchvision ``Compose`` in its
``hyper_parameters``). ``read_archive`` instead unpickles ``<root>/data.pkl`` with an unpickler whose only
real callables rebuild tensors from the archive's storages (``torch._utils._rebuild_tensor_v2``,
``_rebuild_parameter``, ``torch._tensor._rebuild_from_type_v2``) and ``collections.OrderedDict``; every other
class the pickle names becomes an inert ``Opaque`` record (its name, constructor arguments and state are
kept as data, its code is never imported). A file whose tensors need anything else (quantized, sparse,
big-endian or non-CPU-serialised storages, ...) is refused with a ``ValueError`` saying why.

``module_tensors`` flattens a scripted module tree (``Opaque`` objects whose state holds submodules and
tensors) into ``{dotted.name: tensor}``, the names ``state_dict()`` would give.
"""

from __future__ import annotations

import collections
import pickle
import zipfile
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

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
}


class ArchiveError(ValueError):
    """The file is not an archive whose tensors can be read safely."""


class Opaque(dict):
    """Stand-in for a class named by the pickle: records, never executes.

    Dict items set by the pickle (dict subclasses such as Lightning's ``AttributeDict``) stay readable as
    items; ``args`` holds constructor arguments and ``state`` what ``__setstate__`` received.
    """

    qualname = "?"

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__()
        self.args, self.state = args, None

    def __setstate__(self, state: Any) -> None:
        self.state = state

    def __repr__(self) -> str:
        return f"<opaque {self.qualname}>"


def _opaque(module: str, name: str) -> type[Opaque]:
    return type(name, (Opaque,), {"qualname": f"{module}.{name}"})


def _rebuild_tensor(storage: Tensor, offset: int, size: tuple, stride: tuple, *_: Any) -> Tensor:
    return storage.as_strided(tuple(size), tuple(stride), offset).clone()


def _rebuild_parameter(data: Tensor, requires_grad: bool, backward_hooks: Any, *_: Any) -> Tensor:
    return data


def _rebuild_from_type(func: Any, new_type: Any, args: tuple, state: Any) -> Any:
    return func(*args)


_CALLABLES: dict[tuple[str, str], Any] = {
    ("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor,
    ("torch._utils", "_rebuild_parameter"): _rebuild_parameter,
    ("torch._utils", "_rebuild_parameter_with_state"): _rebuild_parameter,
    ("torch._tensor", "_rebuild_from_type_v2"): _rebuild_from_type,
    ("collections", "OrderedDict"): collections.OrderedDict,
}


class _TensorOnlyUnpickler(pickle.Unpickler):
    def __init__(self, data: bytes, archive: zipfile.ZipFile, root: str, name: str) -> None:
        import io

        super().__init__(io.BytesIO(data))
        self.archive, self.root, self.name = archive, root, name
        self.storages: dict[str, Tensor] = {}

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) in _CALLABLES:
            return _CALLABLES[(module, name)]
        if module == "torch" and name in _STORAGE_DTYPES:
            return _STORAGE_DTYPES[name]
        if module.startswith(("torch._utils", "torch._tensor")):
            raise ArchiveError(
                f"{self.name} stores tensors with {module}.{name}, which the safe reader does not rebuild; "
                "re-save the weights as plain float tensors (torch.save(model.state_dict()))."
            )
        return _opaque(module, name)

    def persistent_load(self, pid: Any) -> Tensor:
        if not (isinstance(pid, tuple) and len(pid) >= 5 and pid[0] == "storage"):
            raise ArchiveError(
                f"{self.name} references data as {pid!r}; only storages can be read safely."
            )
        _, dtype, key, _location, numel = pid[:5]
        if not isinstance(dtype, torch.dtype):
            raise ArchiveError(f"{self.name} holds a storage of unsupported type {dtype!r}.")
        if key not in self.storages:
            raw = self.archive.read(f"{self.root}/data/{key}")
            flat = (
                torch.frombuffer(bytearray(raw), dtype=dtype)
                if raw
                else torch.empty(0, dtype=dtype)
            )
            if flat.numel() < numel:
                raise ArchiveError(f"{self.name}: storage {key} is truncated.")
            self.storages[key] = flat
        return self.storages[key]


def read_archive(path: str | Path) -> Any:
    """The unpickled ``data.pkl`` of a PyTorch zip archive, tensors rebuilt, every class ``Opaque``.

    Raises:
        ArchiveError: not a zip archive, big-endian, or tensors that cannot be rebuilt safely.
    """
    path = Path(path)
    if not zipfile.is_zipfile(path):
        raise ArchiveError(
            f"{path} is not a PyTorch zip archive (legacy pickled files are not read, since reading them "
            "could run code); re-save it with a current torch.save."
        )
    with zipfile.ZipFile(path) as archive:
        pickles = [n for n in archive.namelist() if n.endswith("/data.pkl") and n.count("/") == 1]
        if len(pickles) != 1:
            raise ArchiveError(
                f"{path} has no single <root>/data.pkl; it is not a PyTorch archive."
            )
        root = pickles[0].split("/")[0]
        order = f"{root}/byteorder"
        if order in archive.namelist() and archive.read(order).strip() != b"little":
            raise ArchiveError(
                f"{path} stores big-endian tensors, which the safe reader does not convert."
            )
        try:
            return _TensorOnlyUnpickler(archive.read(pickles[0]), archive, root, path.name).load()
        except ArchiveError:
            raise
        except (pickle.UnpicklingError, EOFError, KeyError, TypeError, RuntimeError) as err:
            raise ArchiveError(f"{path}: its data.pkl cannot be read safely ({err}).") from err


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
