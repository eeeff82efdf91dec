"""Reading pickled data files without running code from them.

A pickle can name any importable callable and have the unpickler call it (``os.system`` through
``__reduce__``), so ``pickle.load`` on a file is running that file. Some assets exist only as pickles
(3DDFA's ``bfm_noneck_v3.pkl`` and ``param_mean_std_62d_120x120.pkl``). ``load_data_pickle`` reads
them with an unpickler that builds dicts, lists, tuples, sets, numbers, strings, bytes and numpy
arrays, and refuses every other global with one sentence.
"""

from __future__ import annotations

import _codecs
import pickle
from pathlib import Path
from typing import Any

import numpy as np


class UnsafePickleError(pickle.UnpicklingError):
    """The pickle names something other than plain data; nothing from it was run."""


def _numpy_globals() -> dict[tuple[str, str], Any]:
    reconstruct = np.ndarray((0,)).__reduce__()[0]  # numpy's multiarray._reconstruct
    scalar = np.float64(0).__reduce__()[0]  # numpy's multiarray.scalar
    allowed: dict[tuple[str, str], Any] = {
        ("numpy", "ndarray"): np.ndarray,
        ("numpy", "dtype"): np.dtype,
        ("_codecs", "encode"): _codecs.encode,  # bytes in protocol-2 pickles written by Python 3
    }
    # numpy 1 pickles say numpy.core, numpy 2 pickles say numpy._core: the same functions
    for core in ("numpy.core", "numpy._core"):
        allowed[(f"{core}.multiarray", "_reconstruct")] = reconstruct
        allowed[(f"{core}.multiarray", "scalar")] = scalar
        allowed[(f"{core}.numeric", "_frombuffer")] = _frombuffer
    return allowed


def _frombuffer(buf: Any, dtype: Any, shape: tuple[int, ...], order: str) -> np.ndarray:
    # protocol-5 ndarray pickles: numpy.core.numeric._frombuffer, re-implemented over np.frombuffer
    array = np.frombuffer(buf, dtype=dtype)
    return array.reshape(shape, order=order) if shape else array.reshape(shape)


class _DataUnpickler(pickle.Unpickler):
    """Builds only plain containers, numbers, strings and numpy arrays."""

    def __init__(self, file: Any, source: str) -> None:
        super().__init__(file)
        self._source = source
        self._allowed = _numpy_globals()

    def find_class(self, module: str, name: str) -> Any:
        found = self._allowed.get((module, name))
        if found is None:
            raise UnsafePickleError(
                f"{self._source} is a pickle that names {module}.{name}, which could run code; it was "
                "not loaded (only dicts, lists, numbers, strings and numpy arrays are read): save the "
                "data as .npz instead."
            )
        return found

    def persistent_load(self, pid: Any) -> Any:
        raise UnsafePickleError(f"{self._source} refers to external objects; it was not loaded.")


def load_data_pickle(path: str | Path) -> Any:
    """Unpickle ``path`` allowing only plain data and numpy arrays.

    Raises:
        UnsafePickleError: the pickle names any other class or function (nothing of it runs).
        ValueError: the file is not a readable pickle.
    """
    path = Path(path)
    with path.open("rb") as f:
        try:
            return _DataUnpickler(f, str(path)).load()
        except UnsafePickleError:
            raise
        except (pickle.UnpicklingError, EOFError, ValueError, TypeError) as err:
            raise ValueError(
                f"{path} is not a readable pickle ({err}); save the data as .npz."
            ) from err
