"""Official weights from the Hugging Face Hub: which files, checked against the sha256 the Hub lists.

``download_official`` fetches ``Hanbo-Cheng/DAWN`` (and ``facebook/hubert-large-ls960-ft``) into the
cache (``registry.cache_dir``); ``registry.load_pipeline("dawn-128")`` calls it on first use and converts
the files into a model directory.
"""

from __future__ import annotations

import fnmatch
import logging
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from talkinghead.checkpoints import MissingFilesError, sha256_file
from talkinghead.registry import cache_dir

logger = logging.getLogger(__name__)

DAWN_REPO = "Hanbo-Cheng/DAWN"
HUBERT_REPO = "facebook/hubert-large-ls960-ft"
HUBERT_DIRNAME = "hubert-large-ls960-ft"


def official_patterns(resolutions: Iterable[int]) -> dict[str, str]:
    """What to fetch from ``Hanbo-Cheng/DAWN``: description -> fnmatch pattern (``*`` also matches ``/``)."""
    patterns = {
        "PBNet pose checkpoint": "pbnet*/pose/checkpoint_*.pth.tar",
        "PBNet pose opt.yaml": "pbnet*/pose/opt.yaml",
        "PBNet blink checkpoint": "pbnet*/blink/checkpoint_*.pth.tar",
        "PBNet blink opt.yaml": "pbnet*/blink/opt.yaml",
    }
    for res in resolutions:
        if res not in (128, 256):
            raise ValueError(f"resolution={res} must be 128 or 256.")
        patterns[f"A2V-FDM {res}"] = f"DAWN_{res}.pth"
        patterns[f"LFG {res}"] = f"LFG_{res}_*.pth"
    return patterns


def _repo_files(repo_id: str, revision: str | None) -> dict[str, Any]:
    import huggingface_hub

    entries = huggingface_hub.list_repo_tree(repo_id, recursive=True, revision=revision)
    return {e.path: e for e in entries if getattr(e, "size", None) is not None}


def _select(files: Iterable[str], patterns: dict[str, str], repo_id: str) -> list[str]:
    files = sorted(files)
    chosen: list[str] = []
    unmatched = []
    for label, pattern in patterns.items():
        hits = [f for f in files if fnmatch.fnmatch(f, pattern)]
        if not hits:
            unmatched.append(f"{label} ({pattern})")
        chosen += [h for h in hits if h not in chosen]
    if unmatched:
        raise MissingFilesError(f"{repo_id} has no file for {', '.join(unmatched)}.")
    return chosen


def _verify_lfs(root: Path, entries: dict[str, Any], paths: Iterable[str]) -> None:
    for rel in paths:
        lfs = getattr(entries[rel], "lfs", None)
        if lfs is None:
            continue
        actual = sha256_file(root / rel)
        if actual != lfs.sha256:
            raise ValueError(
                f"{root / rel} has sha256 {actual} but the Hub lists {lfs.sha256}; delete it and download again."
            )


def _hubert_patterns(files: Iterable[str]) -> list[str]:
    files = list(files)
    # one copy of the weights is enough: prefer safetensors over the pickled .bin
    weights = [f for f in files if f.endswith(".safetensors")] or [
        f for f in files if f.endswith("pytorch_model.bin")
    ]
    if not weights:
        raise MissingFilesError(f"{HUBERT_REPO} has no model weights.")
    return sorted({*weights, *(f for f in files if f.endswith((".json", ".txt")) and "/" not in f)})


def download_official(
    dest: str | Path | None = None,
    *,
    resolution: int | Iterable[int] = (128, 256),
    revision: str | None = None,
    hubert: bool = True,
) -> Path:
    """Fetch the official DAWN checkpoints (and HuBERT) from the Hugging Face Hub.

    Layout of ``dest`` (the Hub layout, which ``talkinghead convert official`` reads)::

        DAWN_128.pth  LFG_128_1000ep.pth  DAWN_256.pth  LFG_256_400ep.pth
        pbnet/{pose,blink}/{checkpoint_*.pth.tar, opt.yaml}
        hubert-large-ls960-ft/{config.json, preprocessor_config.json, <weights>, ...}

    Args:
        dest: target directory; default ``cache_dir() / "official"``.
        resolution: 128, 256 or both.
        revision: a branch, tag or commit of ``Hanbo-Cheng/DAWN`` (None = main).
        hubert: also fetch ``facebook/hubert-large-ls960-ft``.
    Returns:
        ``dest``.
    """
    import huggingface_hub

    dest = Path(dest) if dest is not None else cache_dir() / "official"
    resolutions = (resolution,) if isinstance(resolution, int) else tuple(resolution)
    dest.mkdir(parents=True, exist_ok=True)

    entries = _repo_files(DAWN_REPO, revision)
    wanted = _select(entries, official_patterns(resolutions), DAWN_REPO)
    logger.info("downloading %s from %s into %s", ", ".join(wanted), DAWN_REPO, dest)
    huggingface_hub.snapshot_download(
        repo_id=DAWN_REPO, revision=revision, allow_patterns=wanted, local_dir=str(dest)
    )
    _verify_lfs(dest, entries, wanted)

    if hubert:
        hubert_entries = _repo_files(HUBERT_REPO, None)
        hubert_wanted = _hubert_patterns(hubert_entries)
        huggingface_hub.snapshot_download(
            repo_id=HUBERT_REPO, allow_patterns=hubert_wanted, local_dir=str(dest / HUBERT_DIRNAME)
        )
        _verify_lfs(dest / HUBERT_DIRNAME, hubert_entries, hubert_wanted)
    return dest
