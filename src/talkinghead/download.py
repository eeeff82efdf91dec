"""Official weights from the Hugging Face Hub: which files, checked against the sha256 the Hub lists.

``download_official`` fetches ``Hanbo-Cheng/DAWN`` (and ``facebook/hubert-large-ls960-ft``) into the
cache (``registry.cache_dir``); ``registry.load_pipeline("dawn-128")`` calls it on first use and converts
the files into a model directory.

Failures read like the rest of the tool: no network, a proxy error, a missing repository or revision, a
full disk and an interrupted transfer each become one ``DownloadError`` sentence saying what happened and
what to do. huggingface_hub's own retry warnings are silenced while it works. An interrupted download
resumes: the client asks for the rest of a broken transfer with an HTTP ``Range`` within the run, and
running the command again after a failure fetches only the files not yet complete (huggingface_hub 2.x
deletes a partial file when the run fails; tests/test_download_resume.py pins this).
"""

from __future__ import annotations

import contextlib
import errno
import fnmatch
import logging
import shutil
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

from talkinghead.checkpoints import MissingFilesError, sha256_file
from talkinghead.errors import first_line
from talkinghead.registry import cache_dir

logger = logging.getLogger(__name__)

DAWN_REPO = "Hanbo-Cheng/DAWN"
HUBERT_REPO = "facebook/hubert-large-ls960-ft"
HUBERT_DIRNAME = "hubert-large-ls960-ft"

_WHAT_TO_DO = (
    "pass --weights DIR with files you already have, or set HF_HUB_OFFLINE=1 to use only the cache"
)


class DownloadError(OSError):
    """A download failed; the message is one sentence saying what happened and what to do."""


def _error_kinds(err: BaseException) -> set[str]:
    # httpx, httpx2 and requests name their transport errors alike; match by name, not by import
    return {cls.__name__ for cls in type(err).__mro__}


def _explain(err: BaseException, repo_id: str, dest: Path) -> str | None:
    """One sentence for a failure of the Hub client, or None when it is not a download failure."""
    from huggingface_hub import errors

    kinds = _error_kinds(err)
    if isinstance(err, errors.OfflineModeIsEnabled):
        return (
            f"HF_HUB_OFFLINE is set, so {repo_id} cannot be downloaded; unset it and retry, "
            "or pass --weights DIR with files you already have."
        )
    if isinstance(err, (errors.RepositoryNotFoundError, errors.RevisionNotFoundError)):
        return (
            f"{repo_id} (or the revision asked for) was not found on the Hugging Face Hub (HTTP 404); "
            f"check the name and --revision, or {_WHAT_TO_DO}."
        )
    if isinstance(err, errors.EntryNotFoundError) and not isinstance(err, FileNotFoundError):
        return f"a file of {repo_id} is missing on the Hugging Face Hub (HTTP 404); {_WHAT_TO_DO}."
    if isinstance(err, OSError) and err.errno == errno.ENOSPC:
        free = shutil.disk_usage(dest if dest.exists() else dest.parent).free / 1e9
        return (
            f"the disk holding {dest} is full ({free:.1f} GB free) while downloading {repo_id}; free some "
            "space (or choose another --dest) and run the command again: the files already complete are kept."
        )
    if "ProxyError" in kinds:
        return (
            f"the proxy refused the connection to the Hugging Face Hub while downloading {repo_id}; check "
            f"HTTPS_PROXY / HTTP_PROXY and retry, or {_WHAT_TO_DO}."
        )
    if kinds & {"ConnectError", "ConnectTimeout", "ConnectionError", "LocalEntryNotFoundError"}:
        return (
            f"cannot reach the Hugging Face Hub to download {repo_id} (no network?); retry when online, "
            f"or {_WHAT_TO_DO}."
        )
    interrupted = {"ReadError", "ReadTimeout", "RemoteProtocolError", "ChunkedEncodingError"}
    if kinds & interrupted or isinstance(err, ConnectionError) or "TransportError" in kinds:
        return (
            f"the download of {repo_id} was interrupted ({type(err).__name__}); run the same command "
            "again: the files already complete are kept."
        )
    if isinstance(err, errors.HfHubHTTPError):
        return f"the Hugging Face Hub refused {repo_id} ({first_line(err)}); retry later, or {_WHAT_TO_DO}."
    return None


@contextlib.contextmanager
def _quiet_hub_logs() -> Iterator[None]:
    # huggingface_hub logs a warning per retry ("Retrying in 1s [Retry 1/5]"); our error says it once
    hub_logger = logging.getLogger("huggingface_hub")
    level = hub_logger.level
    hub_logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        hub_logger.setLevel(level)


def _hub_call(
    repo_id: str, dest: Path, fn: Callable[..., Any], /, *args: Any, **kwargs: Any
) -> Any:
    """Run one huggingface_hub call; its failures become one ``DownloadError`` sentence."""
    try:
        with _quiet_hub_logs():
            return fn(*args, **kwargs)
    except Exception as err:
        message = _explain(err, repo_id, dest)
        if message is None:
            raise
        raise DownloadError(message) from err


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


def _repo_files(repo_id: str, revision: str | None, dest: Path) -> dict[str, Any]:
    import huggingface_hub

    def listing() -> list[Any]:
        return list(huggingface_hub.list_repo_tree(repo_id, recursive=True, revision=revision))

    entries = _hub_call(repo_id, dest, listing)
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

    entries = _repo_files(DAWN_REPO, revision, dest)
    wanted = _select(entries, official_patterns(resolutions), DAWN_REPO)
    logger.info("downloading %s from %s into %s", ", ".join(wanted), DAWN_REPO, dest)
    _hub_call(
        DAWN_REPO,
        dest,
        huggingface_hub.snapshot_download,
        repo_id=DAWN_REPO,
        revision=revision,
        allow_patterns=wanted,
        local_dir=str(dest),
    )
    _verify_lfs(dest, entries, wanted)

    if hubert:
        hubert_entries = _repo_files(HUBERT_REPO, None, dest)
        hubert_wanted = _hubert_patterns(hubert_entries)
        _hub_call(
            HUBERT_REPO,
            dest,
            huggingface_hub.snapshot_download,
            repo_id=HUBERT_REPO,
            allow_patterns=hubert_wanted,
            local_dir=str(dest / HUBERT_DIRNAME),
        )
        _verify_lfs(dest / HUBERT_DIRNAME, hubert_entries, hubert_wanted)
    return dest
