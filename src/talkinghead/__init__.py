"""talkinghead: one portrait + a speech recording -> a talking-head video (DAWN and friends).

Public API::

    from talkinghead import GenerateOptions, load_pipeline, save_result

    pipe = load_pipeline("demo")                    # or "dawn-128", or a model directory
    portrait = pipe.prepare("face.jpg")             # analysed and encoded once
    result = pipe(portrait, "speech.wav", GenerateOptions(seed=0))
    save_result(result, "talk.mp4", audio_path="speech.wav")
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

__all__ = [
    "GenerateOptions",
    "TalkingHeadPipeline",
    "__version__",
    "available_models",
    "load_pipeline",
    "save_result",
]

if TYPE_CHECKING:
    from talkinghead.dawn.configs import GenerateOptions
    from talkinghead.outputs import save_result
    from talkinghead.pipelines.base import TalkingHeadPipeline
    from talkinghead.registry import available_models, load_pipeline

_LAZY = {
    "GenerateOptions": ("talkinghead.dawn.configs", "GenerateOptions"),
    "TalkingHeadPipeline": ("talkinghead.pipelines.base", "TalkingHeadPipeline"),
    "save_result": ("talkinghead.outputs", "save_result"),
    "available_models": ("talkinghead.registry", "available_models"),
    "load_pipeline": ("talkinghead.registry", "load_pipeline"),
}


def __getattr__(name: str) -> Any:
    # torch and friends load on first use, so `talkinghead --version` stays instant
    if name in _LAZY:
        import importlib

        module, attr = _LAZY[name]
        return getattr(importlib.import_module(module), attr)
    raise AttributeError(f"module 'talkinghead' has no attribute {name!r}")
