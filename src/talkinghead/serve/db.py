"""The job table and the engines that reach it (SQLAlchemy Core; SQLite or PostgreSQL).

SQLite runs in WAL mode with ``synchronous=FULL``, so a committed transaction survives kill -9 and
power loss, and readers never block the writer. pysqlite's own transaction handling is turned off
and every transaction opens explicitly: on the writer engine with ``BEGIN IMMEDIATE`` (it takes the
write lock first, so a read-then-write transaction can never lose a race and two claimers are
serialised), on the reader engine with a plain ``BEGIN`` (a consistent snapshot, no lock). On
PostgreSQL one engine serves both and a claim uses ``FOR UPDATE SKIP LOCKED`` (``queue.claim``).
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import (
    JSON,
    Boolean,
    Column,
    Float,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    create_engine,
    event,
)
from sqlalchemy.engine import Engine

__all__ = ["JOB_STATES", "jobs", "metadata", "open_engines"]

# queued -> running -> succeeded | failed | canceled; queued -> canceled; running -> queued (re-run)
JOB_STATES = ("queued", "running", "succeeded", "failed", "canceled")
FINISHED = ("succeeded", "failed", "canceled")

metadata = MetaData()

jobs = Table(
    "talkinghead_jobs",
    metadata,
    Column("id", String(32), primary_key=True),  # random, URL-safe, unguessable
    Column("model", String(512), nullable=False),  # a name of GET /v1/models
    Column("state", String(16), nullable=False),  # one of JOB_STATES
    Column("options", JSON, nullable=False),  # the family's options, as given (validated)
    Column("inputs", JSON, nullable=False),  # role -> file name inside the job's inputs/ folder
    Column("stage", String(64)),  # current stage of the pipeline ("denoise", "decode", ...)
    Column("stage_done", Integer),  # steps done in that stage
    Column("stage_total", Integer),  # steps of that stage
    Column("error", Text),  # one sentence when failed
    Column("result", JSON),  # frames, fps, seed, seconds (wall time) when succeeded
    Column("created_at", Float, nullable=False),  # unix time, seconds
    Column("started_at", Float),  # start of the current (or last) attempt
    Column("finished_at", Float),
    Column("heartbeat_at", Float),  # last sign of life of the worker running it
    Column("worker", String(128)),  # host:pid:index of the worker that runs / ran it
    Column("claim", String(32)),  # fencing token of the current attempt
    Column("attempts", Integer, nullable=False, default=0),  # starts so far
    Column("cancel_requested", Boolean, nullable=False, default=False),
)
Index("ix_talkinghead_jobs_state_created", jobs.c.state, jobs.c.created_at)


def open_engines(url: str) -> tuple[Engine, Engine]:
    """(reader, writer) engines for ``url``; the tables are created if missing."""
    if not url.startswith("sqlite"):
        engine = create_engine(url, pool_pre_ping=True, pool_size=8, max_overflow=16)
        metadata.create_all(engine)
        return engine, engine
    reader = _sqlite_engine(url, begin="BEGIN")
    writer = _sqlite_engine(url, begin="BEGIN IMMEDIATE")
    metadata.create_all(writer)
    return reader, writer


def _sqlite_engine(url: str, begin: str) -> Engine:
    engine = create_engine(url, connect_args={"check_same_thread": False, "timeout": 30.0})

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        dbapi_connection.isolation_level = None  # we open transactions ourselves (below)
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA synchronous=FULL")
        cursor.execute("PRAGMA busy_timeout=30000")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(connection: Any) -> None:
        connection.exec_driver_sql(begin)

    return engine
