"""Finding weights: official Hugging Face layout converted on first use, cached, and generating;
converted model folders picked by resolution; clear errors for what is missing."""

from __future__ import annotations

import importlib.util
import time
from pathlib import Path
from types import ModuleType

import numpy as np
import pytest

from talkinghead import checkpoints, download
from talkinghead.dawn.configs import GenerateOptions
from talkinghead.dawn.modules import load_dawn_modules
from talkinghead.dawn.pipeline import DawnPipeline
from talkinghead.dawn.weights import resolve_weights
from talkinghead.media.audio import load_audio
from talkinghead.model_index import read_model_index

OFFICIAL_TEST = Path(__file__).resolve().parents[1] / "dawn" / "test_convert.py"


def official_layout_builder() -> ModuleType:
    # the converter tests own the golden-based builder of an official folder; reuse, not copy
    spec = importlib.util.spec_from_file_location("_official_layout", OFFICIAL_TEST)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def official_dir(tmp_path_factory, golden_dir: Path, tiny_model_dir: Path, save_tiny_hubert) -> Path:
    root = tmp_path_factory.mktemp("hf") / "DAWN"
    official_layout_builder().write_hf_layout(root)
    # HuBERT (1024 wide like hubert-large, one small layer) and the face assets beside the official
    # files, as `talkinghead download` lays them out
    save_tiny_hubert(root / download.HUBERT_DIRNAME, hidden_size=1024, pos_groups=16)
    (root / "face3d").symlink_to(tiny_model_dir / "face3d")
    return root


def test_official_layout_is_converted_once_into_the_cache(
    official_dir: Path, tmp_path: Path, monkeypatch
) -> None:
    monkeypatch.setenv("TALKINGHEAD_HOME", str(tmp_path / "home"))
    found = resolve_weights(official_dir, resolution=128)
    assert found.model_dir.is_relative_to(tmp_path / "home" / "models")
    assert found.model_dir.name == "dawn-128"
    assert read_model_index(found.model_dir).config["resolution"] == 128
    assert found.hubert_dir == official_dir / download.HUBERT_DIRNAME
    assert found.face3d_dir == official_dir / "face3d"
    modules = load_dawn_modules(found.model_dir)
    assert modules.resolution == 128
    stamp = (found.model_dir / "unet" / checkpoints.WEIGHTS_FILE).stat().st_mtime_ns
    time.sleep(0.01)
    again = resolve_weights(official_dir, resolution=128)
    assert again == found
    assert (again.model_dir / "unet" / checkpoints.WEIGHTS_FILE).stat().st_mtime_ns == stamp  # reused


def test_official_layout_generates(
    official_dir: Path, tmp_path: Path, monkeypatch, portrait: Path, speech_wav: Path
) -> None:
    monkeypatch.setenv("TALKINGHEAD_HOME", str(tmp_path / "home"))
    pipeline = DawnPipeline.from_pretrained(official_dir, resolution=128)
    audio = load_audio(speech_wav)[: 16000 * 2 // 5]  # 0.4 s: 10 frames of the 128-pixel model
    result = pipeline(portrait, audio,
        options=GenerateOptions(num_steps=1, seed=0, decode_batch=5),
    )
    assert result.frames is not None
    frames = np.concatenate(list(result.frames))
    assert frames.shape == (10, 128, 128, 3) and frames.dtype == np.uint8


def test_converted_folder_is_picked_by_resolution(tiny_model_dir: Path, tmp_path: Path) -> None:
    (tmp_path / "dawn-128").symlink_to(tiny_model_dir)  # stands in for a 128 model
    with pytest.raises(ValueError, match="32-pixel model, but resolution 128"):
        resolve_weights(tmp_path, resolution=128)
    with pytest.raises(checkpoints.MissingFilesError, match="no 256-pixel model"):
        resolve_weights(tmp_path, resolution=256)
    assert resolve_weights(tmp_path).model_dir == tmp_path / "dawn-128"


def test_missing_hubert_is_named(tiny_model_dir: Path, tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("TALKINGHEAD_HOME", str(tmp_path / "home"))
    model = tmp_path / "model"
    model.mkdir()
    for entry in tiny_model_dir.iterdir():
        if entry.name != download.HUBERT_DIRNAME:
            (model / entry.name).symlink_to(entry)
    with pytest.raises(
        checkpoints.MissingFilesError, match=r"HuBERT .* was not found.*talkinghead download"
    ):
        resolve_weights(model)


def test_empty_folder_names_the_expected_files(tmp_path: Path) -> None:
    with pytest.raises(
        checkpoints.MissingFilesError, match=r"model_index\.json.*DAWN_128\.pth.*talkinghead download"
    ):
        resolve_weights(tmp_path)
