"""Workers: the only place a model lives. Each takes jobs from the queue and runs them.

A worker is a thread bound to one device that keeps its pipelines loaded (warm) between jobs. It
claims the oldest queued job, runs the family's pipeline through the protocol, streams the frames
into ``<job>/result.mp4`` (atomic) and records the outcome. Progress goes to the queue at most
every ``progress_seconds``; the same write reads the cancel flag, and a requested cancel raises
inside the pipeline's progress callback, which stops the job at its next step.

Threads, not processes: torch releases the GIL in its kernels, the HTTP layer stays responsive,
and a kill of the server takes its workers with it (nothing is left running a job that the next
start re-queues).
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
from collections import OrderedDict
from pathlib import Path
from typing import Any

from talkinghead.pipelines.base import ProgressCallback
from talkinghead.serve.catalog import model_spec
from talkinghead.serve.config import ServeConfig
from talkinghead.serve.jobfiles import RESULT_NAME, clean_partials
from talkinghead.serve.queue import Job, JobLost, JobQueue

__all__ = ["JobCanceled", "Worker", "generate", "load_model"]

logger = logging.getLogger(__name__)

WARM_MODELS = 2  # pipelines a worker keeps loaded at once (least recently used goes first)


class JobCanceled(Exception):
    """Raised from the progress callback when the job's cancel was requested."""


class WorkerStopping(Exception):
    """Raised from the progress callback when the server shuts down: the job goes back to the queue."""


def load_model(name: str, device: str) -> Any:
    """The pipeline for a model name or folder; the one place a worker loads weights."""
    from talkinghead.registry import load_pipeline

    return load_pipeline(name, device=device)


def generate(
    pipe: Any, portrait: Path, speech: Path, options: Any, callback: ProgressCallback
) -> Any:
    """Run ``pipe`` on one job's inputs, reporting ``callback(stage, done, total)`` at every step.

    Returns:
        the pipeline's ``GenerationResult`` (frames are produced as they are consumed).
    """
    callback("prepare", 0, 1)
    prepared = pipe.prepare(portrait, options)
    callback("prepare", 1, 1)
    return pipe(prepared, speech, options, callback=callback)


class Worker(threading.Thread):
    """One device's job loop. ``stop`` ends it after the current job; ``wake`` cuts an idle wait."""

    def __init__(
        self,
        queue: JobQueue,
        config: ServeConfig,
        device: str,
        index: int,
        stop: threading.Event,
        *,
        cpus: list[int] | None = None,
    ) -> None:
        super().__init__(name=f"talkinghead-worker-{index}", daemon=True)
        self.queue = queue
        self.config = config
        self.device = device
        self.cpus = cpus  # this worker's share of the CPUs (several CPU workers), else None
        self.worker_id = f"{socket.gethostname()}:{os.getpid()}:{index}"
        self.stop = stop
        self.wake = threading.Event()
        self.ready = threading.Event()  # set once the default model is loaded
        self.current: str | None = None  # id of the job being run
        self._pipelines: OrderedDict[str, Any] = OrderedDict()

    def pipeline(self, name: str) -> Any:
        """A warm pipeline for ``name`` (loaded on first use, kept for the next jobs)."""
        if name in self._pipelines:
            self._pipelines.move_to_end(name)
            return self._pipelines[name]
        while len(self._pipelines) >= WARM_MODELS:
            self._pipelines.popitem(last=False)
        logger.info("%s: loading %s on %s", self.name, name, self.device)
        pipe = self._pipelines[name] = load_model(name, self.device)
        return pipe

    def run(self) -> None:
        if self.cpus is not None:
            from talkinghead.threads import configure_worker

            threads = configure_worker(self.cpus)  # before this thread's first torch operation
            logger.info("%s: CPUs %s, %d threads", self.name, self.cpus, threads)
        try:
            self.pipeline(self.config.models[0])
        except Exception:
            logger.exception("%s could not load %s", self.name, self.config.models[0])
        self.ready.set()
        while not self.stop.is_set():
            try:
                job = self.queue.claim(self.worker_id, self.config.models)
            except Exception:
                logger.exception("%s could not reach the queue", self.name)
                job = None
            if job is None:
                self.wake.wait(self.config.poll_seconds)
                self.wake.clear()
                continue
            self.current = job.id
            try:
                self.execute(job)
            finally:
                self.current = None

    def execute(self, job: Job) -> None:
        """Run one claimed job to a final state (or leave it to the queue when lost)."""
        folder = self.queue.job_dir(job.id)
        clean_partials(folder)
        started = time.monotonic()
        try:
            spec = model_spec(job.model)
            options = spec.options_class(**job.options)
            pipe = self.pipeline(job.model)
            inputs = folder / "inputs"
            speech = inputs / job.inputs["speech"]
            result = generate(
                pipe, inputs / job.inputs["portrait"], speech, options, self._reporter(job)
            )
            from talkinghead.outputs import save_result

            frames = save_result(result, folder / RESULT_NAME, audio_path=speech)
            summary = {
                "frames": frames,
                "fps": result.fps,
                "seed": result.seed,
                "seconds": round(time.monotonic() - started, 3),
            }
            if not self.queue.finish(job, "succeeded", result=summary):
                logger.warning("job %s was taken from this worker before it finished", job.id)
            logger.info("job %s done: %d frames in %.1f s", job.id, frames, summary["seconds"])
        except JobCanceled:
            (folder / RESULT_NAME).unlink(missing_ok=True)
            self.queue.finish(job, "canceled")
            logger.info("job %s canceled", job.id)
        except WorkerStopping:
            self.queue.release(job)
            logger.info("job %s returned to the queue (shutting down)", job.id)
        except JobLost:
            logger.warning("job %s was re-queued while this worker ran it; dropped", job.id)
        except (ValueError, OSError, RuntimeError) as err:
            logger.info(
                "job %s failed: %s", job.id, err, exc_info=logger.isEnabledFor(logging.DEBUG)
            )
            self.queue.finish(job, "failed", error=_sentence(err))
        except Exception as err:
            logger.exception("job %s crashed", job.id)
            self.queue.finish(
                job, "failed", error=f"internal error ({type(err).__name__}); see the server log"
            )
        finally:
            clean_partials(folder)

    def _reporter(self, job: Job) -> ProgressCallback:
        """The progress callback of one job: throttled writes, each one reading the cancel flag."""
        last_write = 0.0
        last_stage = ""

        def report(stage: str, done: int, total: int) -> None:
            nonlocal last_write, last_stage
            if self.stop.is_set():
                raise WorkerStopping(job.id)
            now = time.monotonic()
            edge = stage != last_stage or done in (0, total)
            if not edge and now - last_write < self.config.progress_seconds:
                return
            last_write, last_stage = now, stage
            if self.queue.report(job, stage, done, total):
                raise JobCanceled(job.id)

        return report


def _sentence(err: BaseException) -> str:
    """The first line of an error, as one sentence for a client."""
    text = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
    return text
