"""Settings of a serving process: where jobs live, upload limits, workers, access.

One frozen dataclass each, so every default lives here once; ``talkinghead serve`` builds them from
its flags (``cli._add_serve``) and tests build them directly with tiny values.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

__all__ = ["TOKEN_ENV", "Limits", "ServeConfig", "default_data_dir"]

TOKEN_ENV = "TALKINGHEAD_TOKEN"  # bearer token read when --token is not given


def default_data_dir() -> Path:
    """``$TALKINGHEAD_SERVE_DIR``, else ``$XDG_DATA_HOME/talkinghead/serve`` (~/.local/share/...)."""
    if os.environ.get("TALKINGHEAD_SERVE_DIR"):
        return Path(os.environ["TALKINGHEAD_SERVE_DIR"])
    base = os.environ.get("XDG_DATA_HOME") or Path.home() / ".local" / "share"
    return Path(base) / "talkinghead" / "serve"


@dataclass(frozen=True)
class Limits:
    """What one submission may contain. Checked on the decoded content, never on names."""

    max_request_bytes: int = 64 * 1024 * 1024  # whole multipart body, bytes
    max_portrait_bytes: int = 20 * 1024 * 1024  # portrait file, bytes
    max_speech_bytes: int = 40 * 1024 * 1024  # speech file, bytes
    max_portrait_pixels: int = 4096 * 4096  # width x height of the portrait (or a video frame)
    max_portrait_side: int = 8192  # longest side of the portrait, pixels
    max_speech_seconds: float = 300.0  # longest decoded speech accepted, seconds
    max_video_seconds: float = 300.0  # decoded duration of a portrait video, seconds
    max_options_bytes: int = 16 * 1024  # the options JSON, bytes
    max_steps: int = 200  # the largest num_steps a job may ask for
    max_decode_batch: int = 64  # the largest decode_batch a job may ask for


@dataclass(frozen=True)
class ServeConfig:
    """One serving process.

    ``db_url`` None means the embedded default: SQLite (WAL) at ``<data_dir>/queue.sqlite3``; a
    ``postgresql+psycopg://`` URL shares one queue between servers. Each server keeps its job
    folders under ``data_dir``; servers sharing a PostgreSQL queue must share that folder too
    (a network file system), since any of them may run or serve any job.
    """

    data_dir: Path = field(default_factory=default_data_dir)  # jobs and the SQLite queue
    db_url: str | None = None  # SQLAlchemy URL of the queue; None = SQLite in data_dir
    models: tuple[str, ...] = ("demo",)  # model names or folders this server runs; first = default
    devices: tuple[str, ...] = ("cpu",)  # one worker per entry, each with its own warm model
    max_queued: int = 64  # queued jobs beyond this get 429 + Retry-After
    max_attempts: int = 3  # a job interrupted this many times (crash, kill) fails for good
    # a running job whose heartbeat is older is re-queued (shared queue), seconds
    lease_seconds: float = 30.0
    poll_seconds: float = 1.0  # how often an idle worker looks for work queued by another server
    progress_seconds: float = 0.5  # least time between two progress writes of a job
    # bearer token every /v1 call must carry (serve: else $TALKINGHEAD_TOKEN); None = open
    token: str | None = None
    cors_origins: tuple[str, ...] = ()  # origins allowed by CORS; empty = no CORS headers
    web: bool = True  # mount the Gradio page at /
    limits: Limits = field(default_factory=Limits)

    @property
    def jobs_dir(self) -> Path:
        return Path(self.data_dir) / "jobs"

    @property
    def uploads_dir(self) -> Path:
        """Uploads being checked; emptied at start (nothing there belongs to a job)."""
        return Path(self.data_dir) / "uploads"

    @property
    def queue_url(self) -> str:
        return self.db_url or f"sqlite:///{Path(self.data_dir).resolve() / 'queue.sqlite3'}"

    @property
    def embedded(self) -> bool:
        """True when the queue is this server's own SQLite file (no other server shares it)."""
        return self.queue_url.startswith("sqlite")
