"""A job's folder: inputs written once before the job exists, the result written atomically.

Layout under ``ServeConfig.jobs_dir``::

    <id>/inputs/portrait.<ext>   the checked upload, named by its decoded format (never the client's name)
    <id>/inputs/speech.<ext>
    <id>/result.mp4              appears only complete (outputs.save_result: temp file + os.replace)

A folder is assembled under ``uploads/`` and renamed into ``jobs/`` in one step, so ``jobs/`` never
holds a half-copied input. The job's row is inserted after that rename; a crash in between leaves
a folder without a row, which ``sweep_orphans`` removes at the next start.
"""

from __future__ import annotations

import os
import re
import secrets
import shutil
from pathlib import Path

__all__ = [
    "JOB_ID_PATTERN",
    "RESULT_NAME",
    "clean_partials",
    "fsync_tree",
    "install_inputs",
    "is_job_id",
    "new_job_id",
    "sweep_orphans",
]

JOB_ID_PATTERN = re.compile(r"^[A-Za-z0-9_-]{22}$")  # secrets.token_urlsafe(16)
RESULT_NAME = "result.mp4"
INPUTS = "inputs"


def new_job_id() -> str:
    """128 random bits, URL-safe (22 characters): not guessable, safe as a folder name."""
    return secrets.token_urlsafe(16)


def is_job_id(text: str) -> bool:
    return bool(JOB_ID_PATTERN.match(text))


def install_inputs(jobs_dir: Path, staging: Path, job_id: str, files: dict[str, Path]) -> Path:
    """Move checked uploads into a new job folder; returns it.

    Args:
        jobs_dir: ``ServeConfig.jobs_dir``.
        staging: a scratch folder on the same file system (``ServeConfig.uploads_dir``).
        job_id: from ``new_job_id``.
        files: file name inside ``inputs/`` (server-chosen, e.g. "speech.wav") -> checked upload.
    """
    assert is_job_id(job_id)
    partial = staging / f"{job_id}.job"
    (partial / INPUTS).mkdir(parents=True)
    try:
        for name, src in files.items():
            assert "/" not in name and not name.startswith(".")
            shutil.move(src, partial / INPUTS / name)
        fsync_tree(partial)
        jobs_dir.mkdir(parents=True, exist_ok=True)
        final = jobs_dir / job_id
        os.rename(partial, final)
        _fsync_dir(jobs_dir)
    except BaseException:
        shutil.rmtree(partial, ignore_errors=True)
        raise
    return final


def clean_partials(job_dir: Path) -> None:
    """Remove what an interrupted attempt left: temp files of the writer (hidden ``.*`` files)."""
    for path in job_dir.glob(".*"):
        if path.is_dir():
            shutil.rmtree(path, ignore_errors=True)
        else:
            path.unlink(missing_ok=True)


def sweep_orphans(jobs_dir: Path, staging: Path, known: set[str]) -> int:
    """Delete job folders without a row and everything in ``staging``; returns how many went."""
    removed = 0
    if staging.is_dir():
        for path in staging.iterdir():
            shutil.rmtree(path, ignore_errors=True) if path.is_dir() else path.unlink(
                missing_ok=True
            )
            removed += 1
    if jobs_dir.is_dir():
        for path in jobs_dir.iterdir():
            if path.name not in known:
                shutil.rmtree(path, ignore_errors=True)
                removed += 1
    return removed


def fsync_tree(root: Path) -> None:
    """fsync every file and folder under ``root`` (the inputs must be on disk before the row is)."""
    for folder, _dirs, names in os.walk(root):
        for name in names:
            fd = os.open(os.path.join(folder, name), os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
        _fsync_dir(Path(folder))


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
