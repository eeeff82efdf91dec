"""model_index.py: the one index file of a model directory, and legacy model.json folders."""

from __future__ import annotations

import json

import pytest

from talkinghead.dawn.modules import COMPONENTS, dawn_index, load_dawn_modules, write_dawn_index
from talkinghead.model_index import (
    INDEX_FILE,
    LEGACY_FILE,
    ModelIndex,
    NotAModelError,
    has_model_index,
    read_model_index,
    write_model_index,
)


def test_round_trip(tmp_path):
    index = ModelIndex("dawn", {"unet": "unet"}, "logmel", {"resolution": 64})
    write_model_index(tmp_path, index)
    assert read_model_index(tmp_path) == index
    data = json.loads((tmp_path / INDEX_FILE).read_text())
    assert data["format"] == "talkinghead" and data["format_version"] == 1


def test_legacy_model_json_still_loads(tmp_path):
    (tmp_path / LEGACY_FILE).write_text(
        json.dumps({"format": "talkinghead", "version": 1, "resolution": 64, "audio_features": "logmel"})
    )
    assert has_model_index(tmp_path)
    index = read_model_index(tmp_path)
    assert index.family == "dawn" and index.audio_features == "logmel"
    assert index.config == {"resolution": 64}
    assert set(index.components) == set(COMPONENTS)
    # writing an index supersedes the legacy file
    write_dawn_index(tmp_path, 64, "logmel")
    assert not (tmp_path / LEGACY_FILE).exists()
    assert read_model_index(tmp_path) == dawn_index(64, "logmel")


def test_foreign_and_newer_files_are_refused(tmp_path):
    with pytest.raises(NotAModelError, match="not a talkinghead model directory"):
        read_model_index(tmp_path)
    (tmp_path / INDEX_FILE).write_text(json.dumps({"format": "other"}))
    with pytest.raises(ValueError, match="not a talkinghead model index"):
        read_model_index(tmp_path)
    (tmp_path / INDEX_FILE).write_text(
        json.dumps({"format": "talkinghead", "format_version": 99, "family": "dawn", "components": {}})
    )
    with pytest.raises(ValueError, match="upgrade talkinghead"):
        read_model_index(tmp_path)
    (tmp_path / INDEX_FILE).write_text("{not json")
    with pytest.raises(ValueError, match="not valid JSON"):
        read_model_index(tmp_path)


def test_missing_components_are_named(tmp_path):
    write_dawn_index(tmp_path, 128, "hubert")
    with pytest.raises(FileNotFoundError, match=r"flow_ae/config\.json.*face_loc/model\.safetensors"):
        load_dawn_modules(tmp_path)
