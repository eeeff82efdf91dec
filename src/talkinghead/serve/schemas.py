"""The JSON the REST API answers with (pydantic models: they are the OpenAPI schema)."""

from __future__ import annotations

import time
from typing import Any, Literal

from pydantic import BaseModel, Field

from talkinghead.serve.catalog import ModelSpec
from talkinghead.serve.options import describe_options
from talkinghead.serve.queue import Job

__all__ = ["ErrorOut", "HealthOut", "JobOut", "JobPage", "ModelOut", "job_out"]

State = Literal["queued", "running", "succeeded", "failed", "canceled"]


class ErrorOut(BaseModel):
    """Every error: one sentence saying what is wrong and what to do."""

    error: str = Field(
        examples=["the speech file has no audio; upload a wav, mp3, flac, m4a or ogg recording"]
    )


class ResultOut(BaseModel):
    frames: int  # frames in the mp4
    fps: int
    seed: int  # the seed that reproduces this video (options {"seed": ...})
    seconds: float  # wall time of the generation


class JobOut(BaseModel):
    """A job as a client sees it."""

    id: str
    model: str
    state: State
    stage: str | None = Field(None, description="current pipeline stage (prepare, sample, decode)")
    stage_done: int | None = Field(None, description="steps done in the current stage")
    stage_total: int | None = Field(None, description="steps of the current stage")
    progress: float | None = Field(None, description="fraction of the current stage done, 0..1")
    eta_seconds: float | None = Field(
        None,
        description="estimated seconds until done, from this model's recent jobs (null "
        "until one has finished)",
    )
    position: int | None = Field(None, description="queued jobs ahead of this one")
    error: str | None = None
    cancel_requested: bool = Field(
        False, description="DELETE was called; it stops at its next step"
    )
    options: dict[str, Any]
    attempts: int = Field(description="times the job was started (a restart re-runs it)")
    created_at: float
    started_at: float | None = None
    finished_at: float | None = None
    result: ResultOut | None = None
    result_url: str | None = Field(None, description="GET this for the mp4 once succeeded")
    deleted: bool = Field(False, description="true when DELETE removed a finished job")


class JobPage(BaseModel):
    jobs: list[JobOut]
    total: int
    limit: int
    offset: int


class ModelOut(BaseModel):
    name: str
    family: str
    default: bool
    accepts_video: bool
    options: dict[str, Any] = Field(description="option name -> default value")


class HealthOut(BaseModel):
    status: Literal["ok", "starting"]
    workers: int
    ready_workers: int
    queued: int
    running: int


def job_out(
    job: Job, *, position: int | None = None, mean_seconds: float | None = None, workers: int = 1
) -> JobOut:
    """A row as the API shows it; ``mean_seconds`` of the model's recent jobs gives the ETA."""
    progress = None
    if job.stage_total:
        progress = min(1.0, (job.stage_done or 0) / job.stage_total)
    eta = None
    if mean_seconds is not None:
        if job.state == "running" and job.started_at is not None:
            eta = max(0.0, mean_seconds - (time.time() - job.started_at))
        elif job.state == "queued" and position is not None:
            eta = mean_seconds * (position // max(1, workers) + 1)
    return JobOut(
        id=job.id,
        model=job.model,
        state=job.state,
        stage=job.stage,  # type: ignore[arg-type]
        stage_done=job.stage_done,
        stage_total=job.stage_total,
        progress=progress,
        eta_seconds=None if eta is None else round(eta, 1),
        position=position if job.state == "queued" else None,
        error=job.error,
        cancel_requested=job.cancel_requested,
        options=job.options,
        attempts=job.attempts,
        created_at=job.created_at,
        started_at=job.started_at,
        finished_at=job.finished_at,
        result=ResultOut(**job.result) if job.result else None,
        result_url=f"/v1/jobs/{job.id}/result" if job.state == "succeeded" else None,
    )


def model_out(spec: ModelSpec, default: bool) -> ModelOut:
    return ModelOut(
        name=spec.name,
        family=spec.family,
        default=default,
        accepts_video=spec.accepts_video,
        options=describe_options(spec.options_class, spec.defaults),
    )
