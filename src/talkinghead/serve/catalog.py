"""What the server knows about a model WITHOUT loading it: family, options, what it takes.

The HTTP layer checks a submission against this (unknown model, bad options, a video for a
model that takes stills) before a job exists; only a worker ever loads the weights
(``worker.load_model``).
"""

from __future__ import annotations

import json
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
    """Describe ``name``; raises ValueError with one sentence when it is not a model.

    Every model today is DAWN (``GenerateOptions``); when the family registry lands, the family
    comes from the folder's ``model_index.json`` and the options class from the registry entry.
    """
    from ..configs import GenerateOptions

    if name == "demo":
        return ModelSpec("demo", "dawn", GenerateOptions, dict(DEMO_DEFAULTS))
    path = Path(name)
    if not path.is_dir():
        raise ValueError(f"model {name!r} is neither 'demo' nor a model folder")
    family = "dawn"
    index = path / "model_index.json"
    if index.is_file():
        family = json.loads(index.read_text()).get("family", family)
    return ModelSpec(name, family, GenerateOptions)
