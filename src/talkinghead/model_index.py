"""``model_index.json``: the one file that says what a model directory is.

Every model directory of every family has one (diffusers keeps the same idea)::

    {
      "format": "talkinghead",
      "format_version": 1,
      "family": "dawn",                                 # families.FAMILIES key: picks the pipeline
      "components": {"unet": "unet", ...},              # component name -> subfolder
      "audio_features": "logmel",                       # what the audio is turned into
      "config": {"resolution": 64, "diffusion": {...}}  # the family's whole pipeline config
    }

Each component subfolder holds ``config.json`` + ``model.safetensors`` (``checkpoints``). This module is
the only place the file is read or written. Directories written before the index existed carry a
``model.json`` (``{"format", "version", "resolution", "audio_features"}``, DAWN only); they still load.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from talkinghead.files import write_json

INDEX_FILE = "model_index.json"
LEGACY_FILE = "model.json"
FORMAT_NAME = "talkinghead"
FORMAT_VERSION = 1
# the component folders of a DAWN directory written before model_index.json
LEGACY_DAWN_COMPONENTS = ("flow_ae", "pose", "blink", "unet", "face_loc")


@dataclass(frozen=True)
class ModelIndex:
    """What a model directory holds.

    Attributes:
        family: the model family (``families.FAMILIES`` key).
        components: component name -> subfolder (relative to the directory).
        audio_features: the audio representation the model was trained on ("hubert", "logmel", ...).
        config: the family's pipeline config as a JSON object (resolution, diffusion settings, ...).
    """

    family: str
    components: dict[str, str]
    audio_features: str
    config: dict[str, Any] = field(default_factory=dict)


class NotAModelError(FileNotFoundError):
    """The directory has neither ``model_index.json`` nor a legacy ``model.json``."""


def has_model_index(directory: str | Path) -> bool:
    """Whether ``directory`` is a model directory (current or legacy layout)."""
    directory = Path(directory)
    return (directory / INDEX_FILE).is_file() or (directory / LEGACY_FILE).is_file()


def read_model_index(directory: str | Path, family: str | None = None) -> ModelIndex:
    """The index of a model directory, checked to be ours, of a version this code reads and, when
    ``family`` is given, of that family.

    Raises:
        NotAModelError: no index file. ValueError: a file that is not ours, too new, or of another
            family.
    """
    directory = Path(directory)
    path = directory / INDEX_FILE
    if path.is_file():
        index = _read_current(path)
    elif (directory / LEGACY_FILE).is_file():
        index = _read_legacy(directory / LEGACY_FILE)
    else:
        raise NotAModelError(
            f"{directory} is not a talkinghead model directory (no {INDEX_FILE}); pass a model "
            "directory, a model name (`talkinghead models`), or official files to convert."
        )
    if family is not None and index.family != family:
        raise ValueError(f"{directory} holds a {index.family!r} model, not a {family!r} model.")
    return index


def _read_current(path: Path) -> ModelIndex:
    data = _read_json(path)
    version = data.get("format_version")
    if data.get("format") != FORMAT_NAME or not isinstance(version, int):
        raise ValueError(f"{path} is not a talkinghead model index.")
    if version > FORMAT_VERSION:
        raise ValueError(
            f"{path} has format_version {version}, newer than this talkinghead reads "
            f"({FORMAT_VERSION}); upgrade talkinghead."
        )
    return ModelIndex(
        family=str(data["family"]),
        components={str(k): str(v) for k, v in data["components"].items()},
        audio_features=str(data.get("audio_features", "")),
        config=dict(data.get("config", {})),
    )


def write_model_index(directory: str | Path, index: ModelIndex) -> Path:
    """Write ``directory/model_index.json`` atomically; returns its path."""
    path = Path(directory) / INDEX_FILE
    write_json(
        path,
        {
            "format": FORMAT_NAME,
            "format_version": FORMAT_VERSION,
            "family": index.family,
            "components": index.components,
            "audio_features": index.audio_features,
            "config": index.config,
        },
    )
    (Path(directory) / LEGACY_FILE).unlink(missing_ok=True)  # superseded by the index
    return path


def _read_json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise ValueError(f"{path} is not valid JSON ({err}); the model directory is damaged.") from err
    if isinstance(data, dict):
        return data
    raise ValueError(f"{path} is not a talkinghead model index.")


def _read_legacy(path: Path) -> ModelIndex:
    data = _read_json(path)
    if data.get("format") != FORMAT_NAME or data.get("version") != 1:
        raise ValueError(
            f"{path} is not a talkinghead v1 model (format={data.get('format')!r}, "
            f"version={data.get('version')!r})."
        )
    return ModelIndex(
        family="dawn",
        components={name: name for name in LEGACY_DAWN_COMPONENTS},
        audio_features=str(data.get("audio_features", "hubert")),
        config={"resolution": int(data["resolution"])},
    )
