"""talkinghead: one portrait + a speech recording -> a talking-head video (DAWN and friends).

Public API::

    from talkinghead import TalkingHeadPipeline, GenerateOptions
    pipe = TalkingHeadPipeline.from_pretrained(path)
    result = pipe(image="face.jpg", audio="speech.wav", options=GenerateOptions(seed=0))
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
    from .configs import GenerateOptions
    from .outputs import save_result
    from .pipelines.talking_head import TalkingHeadPipeline

_LAZY = {
    "GenerateOptions": ("talkinghead.configs", "GenerateOptions"),
    "TalkingHeadPipeline": ("talkinghead.pipelines.talking_head", "TalkingHeadPipeline"),
    "save_result": ("talkinghead.outputs", "save_result"),
}


def __getattr__(name: str) -> Any:
    # torch and friends load on first use, so `talkinghead --version` stays instant
    if name in _LAZY:
        import importlib

        module, attr = _LAZY[name]
        return getattr(importlib.import_module(module), attr)
    raise AttributeError(f"module 'talkinghead' has no attribute {name!r}")


def available_models() -> list[str]:
    """Names of the architecture presets (``configs.PRESETS``)."""
    from .configs import PRESETS

    return sorted(PRESETS)


def load_pipeline(path: str, **kwargs: Any) -> TalkingHeadPipeline:
    """``TalkingHeadPipeline.from_pretrained(path, **kwargs)``."""
    from .pipelines.talking_head import TalkingHeadPipeline

    return TalkingHeadPipeline.from_pretrained(path, **kwargs)
