"""What the server knows about a model WITHOUT loading it: family, options, what it takes.

The HTTP layer checks a submission against this (unknown model, bad options, a video for a
model that takes stills) before a job exists; only a worker ever loads the weights
(``worker.load_model``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

__all__ = ["ModelSpec", "model_spec"]

# the packaged demo animates its own portrait, whose face is known (demo.KnownFace): no crop
DEMO_DEFAULTS: dict[str, Any] = {"crop": False}


@dataclass(frozen=True)
class ModelSpec:
    """A model as clients see it (``GET /v1/models``)."""

    name: str  # what a job names ("demo", a registry name or a model folder)
    family: str  # the registry's family name
    options_class: type  # the family's frozen options dataclass
    # this model's overrides of the options class's defaults
    defaults: dict[str, Any] = field(default_factory=dict)
    accepts_video: bool = False  # whether the portrait may be a video of the person


def model_spec(name: str) -> ModelSpec:
    """Describe ``name`` (a registry name or a model folder); raises ValueError with one sentence
    when it is not a model."""
    from talkinghead.families import get_family, resolve
    from talkinghead.model_index import has_model_index, read_model_index
    from talkinghead.registry import MODELS

    if name in MODELS:
        family = MODELS[name].family
    elif Path(name).is_dir():
        family = read_model_index(name).family if has_model_index(name) else "dawn"
    else:
        raise ValueError(f"model {name!r} is neither a model name ({', '.join(MODELS)}) nor a model folder")
    entry = get_family(family)
    defaults = dict(DEMO_DEFAULTS) if name == "demo" else {}
    return ModelSpec(name, family, resolve(entry.options), defaults, entry.takes_video)
