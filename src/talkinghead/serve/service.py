"""What the REST API and the web page both do: check a submission and queue it, describe jobs.

Neither front end touches the queue's folders or rows directly, so both apply the same limits and
the same checks. A submission that fails any check leaves nothing behind: its scratch folder under
``uploads/`` goes in a ``finally``, and no row exists until every check passed.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import BinaryIO

from talkinghead.serve.catalog import ModelSpec, model_spec
from talkinghead.serve.config import ServeConfig
from talkinghead.serve.jobfiles import new_job_id
from talkinghead.serve.options import parse_options
from talkinghead.serve.pool import WorkerPool
from talkinghead.serve.queue import Job, JobQueue
from talkinghead.serve.schemas import JobOut, job_out
from talkinghead.serve.uploads import UploadError, check_portrait, check_speech, copy_limited

__all__ = ["JobService"]


class JobService:
    """Submissions and views over one queue, for the API and the page alike."""

    def __init__(self, config: ServeConfig, queue: JobQueue, pool: WorkerPool | None) -> None:
        self.config = config
        self.queue = queue
        self.pool = pool
        self.specs: dict[str, ModelSpec] = {name: model_spec(name) for name in config.models}

    def spec(self, model: str | None) -> ModelSpec:
        name = model or self.config.models[0]
        if name not in self.specs:
            raise UploadError(
                404, f"model {name!r} is not served here; GET /v1/models lists the ones that are"
            )
        return self.specs[name]

    def submit(
        self, portrait: BinaryIO, speech: BinaryIO, options: str | None, model: str | None
    ) -> Job:
        """Check everything, then queue one job.

        Args:
            portrait, speech: readable binary streams (the uploads); names are never looked at.
            options: the options JSON (or None for the model's defaults).
            model: a served model name (None = the server's default).
        Raises:
            UploadError: 4xx with one sentence; queue.QueueFull: 429.
        """
        spec = self.spec(model)
        parsed = parse_options(options, spec.options_class, self.config.limits, spec.defaults)
        self.queue.check_room()
        job_id = new_job_id()
        scratch = self.config.uploads_dir / f"{job_id}.upload"
        scratch.mkdir(parents=True)
        limits = self.config.limits
        try:
            copy_limited(portrait, scratch / "portrait", limits.max_portrait_bytes, "portrait")
            copy_limited(speech, scratch / "speech", limits.max_speech_bytes, "speech file")
            face = check_portrait(scratch / "portrait", limits, video_ok=spec.accepts_video)
            voice = check_speech(scratch / "speech", limits)
            job = self.queue.submit(
                job_id, spec.name, parsed, {face.name: face.path, voice.name: voice.path}
            )
        finally:
            shutil.rmtree(scratch, ignore_errors=True)
        if self.pool is not None:
            self.pool.notify()
        return job

    def view(self, job: Job) -> JobOut:
        position = self.queue.position(job) if job.state == "queued" else None
        mean = None
        if job.state in ("queued", "running"):
            mean = self.queue.mean_seconds(job.model)
        return job_out(job, position=position, mean_seconds=mean, workers=len(self.config.devices))

    def result_path(self, job: Job) -> Path:
        return self.queue.job_dir(job.id) / "result.mp4"
