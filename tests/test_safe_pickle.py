"""safe_pickle: plain data and numpy arrays load; a pickle that would run code is refused, and nothing runs."""

from __future__ import annotations

import os
import pickle

import numpy as np
import pytest

from talkinghead.face.analysis import load_bfm_keypoints
from talkinghead.safe_pickle import UnsafePickleError, load_data_pickle


class _RunsCode:
    """Unpickling this calls os.system: the attack a .pkl can carry."""

    def __init__(self, marker) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


@pytest.mark.parametrize("protocol", [2, 4, 5])
def test_plain_data_and_arrays_load(tmp_path, protocol):
    data = {
        "mean": np.arange(62, dtype=np.float32),
        "std": np.ones((2, 3)),
        "keys": [1, 2.5, "x", (True, None), b"raw"],
        "scalar": np.float64(3.5),
        "ints": np.arange(6, dtype=np.int64).reshape(2, 3)[:, ::2],
    }
    path = tmp_path / "data.pkl"
    path.write_bytes(pickle.dumps(data, protocol=protocol))
    loaded = load_data_pickle(path)
    assert loaded.keys() == data.keys()
    np.testing.assert_array_equal(loaded["mean"], data["mean"])
    assert loaded["mean"].dtype == np.float32
    np.testing.assert_array_equal(loaded["std"], data["std"])
    np.testing.assert_array_equal(loaded["ints"], data["ints"])
    assert loaded["keys"] == data["keys"] and loaded["scalar"] == 3.5


@pytest.mark.parametrize("protocol", [2, 4])
def test_pickle_that_runs_code_is_refused_and_nothing_runs(tmp_path, protocol):
    marker = tmp_path / "ran"
    path = tmp_path / "bfm_noneck_v3.pkl"
    path.write_bytes(pickle.dumps({"u": np.zeros(3), "evil": _RunsCode(marker)}, protocol=protocol))
    with pytest.raises(
        UnsafePickleError, match=r"names (posix|os|nt)\.system, which could run code"
    ):
        load_data_pickle(path)
    assert not marker.exists()
    # the face loader refuses it the same way
    with pytest.raises(UnsafePickleError):
        load_bfm_keypoints(path)
    assert not marker.exists()


def test_any_other_class_is_refused(tmp_path):
    path = tmp_path / "x.pkl"
    path.write_bytes(pickle.dumps({"when": __import__("datetime").date(2020, 1, 1)}))
    with pytest.raises(UnsafePickleError, match=r"datetime\.date"):
        load_data_pickle(path)


def test_not_a_pickle_is_one_sentence(tmp_path):
    path = tmp_path / "x.pkl"
    path.write_bytes(b"not a pickle at all")
    with pytest.raises(ValueError, match="is not a readable pickle"):
        load_data_pickle(path)
