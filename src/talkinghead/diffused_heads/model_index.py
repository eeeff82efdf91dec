"""Read / write ``model_index.json`` (the schema of the lead's ``talkinghead/model_index.py``, issue #11).

A local stand-in until that module lands on main: ``{"format": "talkinghead", "format_version": 1,
"family": ..., "components": {name: subfolder}, "audio_features": ..., "config": {...}}``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from .. import hub

INDEX_FILE = "model_index.json"
FORMAT_NAME = "talkinghead"
FORMAT_VERSION = 1


def write_model_index(
    directory: str | Path,
    family: str,
    components: dict[str, str],
    audio_features: str,
    config: dict[str, Any],
) -> Path:
    """Write ``directory/model_index.json`` atomically."""
    info = {
        "format": FORMAT_NAME,
        "format_version": FORMAT_VERSION,
        "family": family,
        "components": components,
        "audio_features": audio_features,
        "config": config,
    }
    path = Path(directory) / INDEX_FILE
    hub.atomic_write_text(path, json.dumps(info, indent=2) + "\n")
    return path


def read_model_index(directory: str | Path, family: str) -> dict[str, Any]:
    """``directory/model_index.json``, checked to be ours, of a version we read and of ``family``."""
    path = Path(directory) / INDEX_FILE
    if not path.is_file():
        raise hub.missing_files_error(
            [INDEX_FILE],
            directory,
            f"convert the official files with `talkinghead convert {family}`",
        )
    info = json.loads(path.read_text(encoding="utf-8"))
    if info.get("format") != FORMAT_NAME or info.get("format_version") != FORMAT_VERSION:
        raise ValueError(f"{path} is not a talkinghead v{FORMAT_VERSION} model index.")
    if info.get("family") != family:
        raise ValueError(f"{directory} holds a {info.get('family')!r} model, not a {family!r} one.")
    return info
