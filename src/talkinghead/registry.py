"""Models by name: ``load_pipeline("demo")``, ``load_pipeline("dawn-128")``, or a path.

Each name is a ``ModelEntry``: the family it belongs to, a one-line description, and where its model
directory comes from - packaged with talkinghead (``"demo"``, works offline), or official files
downloaded once from the Hugging Face Hub (sha256-checked) and converted on first use into the cache
(``cache_dir()/models/<name>``). A path to a model directory (or, for DAWN, a folder of them or the
official layout) loads as before.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from talkinghead.families import FAMILIES

if TYPE_CHECKING:
    from talkinghead.pipelines.base import TalkingHeadPipeline

ASSETS = Path(__file__).parent / "assets"


def cache_dir() -> Path:
    """``$TALKINGHEAD_HOME``, else ``$XDG_CACHE_HOME/talkinghead``, else ``~/.cache/talkinghead``."""
    if home := os.environ.get("TALKINGHEAD_HOME"):
        return Path(home).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(xdg).expanduser() / "talkinghead"


def default_model_dir(name: str) -> Path:
    """Where a converted model called ``name`` (e.g. ``"dawn-128"``) lives in the cache."""
    return cache_dir() / "models" / name


def _official_dawn(resolution: int) -> Callable[[], Path]:
    def fetch() -> Path:
        from talkinghead.dawn.convert import convert_official_dir
        from talkinghead.download import download_official

        target = default_model_dir(f"dawn-{resolution}")
        if not (target / "model_index.json").is_file():
            official = download_official(resolution=resolution)
            convert_official_dir(official, target.parent, resolutions=(resolution,))
        return target

    return fetch


@dataclass(frozen=True)
class ModelEntry:
    """A model known by name.

    Attributes:
        family: ``families.FAMILIES`` key.
        description: one line for ``talkinghead models`` and ``/v1/models``.
        locate: returns the model directory, downloading and converting on first use.
        packaged: True when the weights ship with talkinghead (no download, works offline).
    """

    family: str
    description: str
    locate: Callable[[], Path]
    packaged: bool = False


MODELS: dict[str, ModelEntry] = {
    "demo": ModelEntry(
        family="dawn",
        description="64-px DAWN trained by talkinghead on synthetic faces (ships with the package, "
        "CPU, no download).",
        locate=lambda: ASSETS / "demo" / "model",
        packaged=True,
    ),
    "diffused-heads-demo": ModelEntry(
        family="diffused-heads",
        description="64-px Diffused Heads trained by talkinghead on the demo's synthetic faces "
        "(ships with the package, CPU, no download).",
        locate=lambda: ASSETS / "demo" / "diffused_heads",
        packaged=True,
    ),
    "dawn-128": ModelEntry(
        family="dawn",
        description="Official DAWN at 128 px (Hanbo-Cheng/DAWN + HuBERT-large, about 2 GB, "
        "downloaded once).",
        locate=_official_dawn(128),
    ),
    "dawn-256": ModelEntry(
        family="dawn",
        description="Official DAWN at 256 px (Hanbo-Cheng/DAWN + HuBERT-large, downloaded once).",
        locate=_official_dawn(256),
    ),
}


def available_models() -> dict[str, str]:
    """Name -> one-line description of every named model whose family this install can load."""
    return {name: e.description for name, e in MODELS.items() if e.family in FAMILIES}


def model_path(name_or_path: str | Path) -> Path:
    """The directory behind a model name (fetched if needed), or the path itself.

    Raises:
        ValueError: neither a known name nor an existing path.
    """
    if isinstance(name_or_path, str) and name_or_path in MODELS:
        return MODELS[name_or_path].locate()
    path = Path(name_or_path).expanduser()
    if not path.exists():
        names = ", ".join(available_models())
        raise ValueError(
            f"{str(name_or_path)!r} is neither a model name ({names}) nor an existing folder; "
            "pass one of those names or a model directory (`talkinghead download` fetches the "
            "official DAWN weights)."
        )
    return path


def load_pipeline(
    name_or_path: str | Path,
    *,
    device: str | torch.device = "cpu",
    dtype: torch.dtype = torch.float32,
    **kwargs: Any,
) -> TalkingHeadPipeline:
    """Load a model by name (``available_models()``) or path, with the pipeline of its family.

    Args:
        name_or_path: ``"demo"``, ``"dawn-128"``, ... or a model directory.
        device, dtype: where and in which precision the networks run.
        **kwargs: passed to the family pipeline's ``from_pretrained`` (e.g. ``face3d_dir``).
    """
    from talkinghead.pipelines.base import TalkingHeadPipeline

    return TalkingHeadPipeline.from_pretrained(
        model_path(name_or_path), device=device, dtype=dtype, **kwargs
    )
