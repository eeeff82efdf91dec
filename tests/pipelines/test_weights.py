"""Finding weights: official Hugging Face layout converted on first use and cached, converted
model folders picked by resolution, clear errors for what is missing."""

from __future__ import annotations

import importlib.util
import time
from pathlib import Path
from types import ModuleType

import pytest

from talkinghead import hub
from talkinghead.pipelines.weights import resolve_weights

OFFICIAL_TEST = Path(__file__).resolve().parents[1] / "convert" / "test_dawn_official.py"


def official_layout_builder() -> ModuleType:
    # the converter tests own the golden-based builder of an official folder; reuse, not copy
    spec = importlib.util.spec_from_file_location("_official_layout", OFFICIAL_TEST)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def official_dir(tmp_path_factory, golden_dir: Path, tiny_model_dir: Path) -> Path:
    root = tmp_path_factory.mktemp("hf") / "DAWN"
    official_layout_builder().write_hf_layout(root)
    # HuBERT and the face assets beside the official files, as `talkinghead download` lays them out
    (root / hub.HUBERT_DIRNAME).symlink_to(tiny_model_dir / hub.HUBERT_DIRNAME)
    (root / "face3d").symlink_to(tiny_model_dir / "face3d")
    return root


def test_official_layout_is_converted_once_into_the_cache(
    official_dir: Path, tmp_path: Path, monkeypatch
) -> None:
    monkeypatch.setenv("TALKINGHEAD_HOME", str(tmp_path / "home"))
    found = resolve_weights(official_dir, resolution=128)
    assert found.model_dir.is_relative_to(tmp_path / "home" / "models")
    assert found.model_dir.name == "dawn-128"
    assert hub.read_model_json(found.model_dir)["resolution"] == 128
    assert found.hubert_dir == official_dir / hub.HUBERT_DIRNAME
    assert found.face3d_dir == official_dir / "face3d"
    modules = hub.load_model_dir(found.model_dir)
    assert modules.resolution == 128
    stamp = (found.model_dir / "unet" / hub.WEIGHTS_FILE).stat().st_mtime_ns
    time.sleep(0.01)
    again = resolve_weights(official_dir, resolution=128)
    assert again == found
    assert (again.model_dir / "unet" / hub.WEIGHTS_FILE).stat().st_mtime_ns == stamp  # reused


def test_converted_folder_is_picked_by_resolution(tiny_model_dir: Path, tmp_path: Path) -> None:
    (tmp_path / "dawn-128").symlink_to(tiny_model_dir)  # stands in for a 128 model
    with pytest.raises(ValueError, match="32-pixel model, but resolution 128"):
        resolve_weights(tmp_path, resolution=128)
    with pytest.raises(hub.MissingFilesError, match="no 256-pixel model"):
        resolve_weights(tmp_path, resolution=256)
    assert resolve_weights(tmp_path).model_dir == tmp_path / "dawn-128"


def test_missing_hubert_is_named(tiny_model_dir: Path, tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("TALKINGHEAD_HOME", str(tmp_path / "home"))
    model = tmp_path / "model"
    model.mkdir()
    for entry in tiny_model_dir.iterdir():
        if entry.name != hub.HUBERT_DIRNAME:
            (model / entry.name).symlink_to(entry)
    with pytest.raises(hub.MissingFilesError, match=r"HuBERT .* was not found.*talkinghead download"):
        resolve_weights(model)


def test_empty_folder_names_the_expected_files(tmp_path: Path) -> None:
    with pytest.raises(hub.MissingFilesError, match=r"model\.json.*DAWN_128\.pth.*talkinghead download"):
        resolve_weights(tmp_path)
