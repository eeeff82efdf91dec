"""The web page (Gradio, mounted at /): upload, pick model and options, watch, preview, download.

It queues jobs through ``JobService.submit`` like the REST API (same checks, same queue, same
workers) and follows the job in the queue, so a page closed mid-job loses nothing: the job goes
on and shows up in ``GET /v1/jobs``. The packaged demo portrait and speech are the example.
"""

from __future__ import annotations

import json
import secrets
import shutil
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import gradio as gr
from fastapi import FastAPI

from talkinghead.demo import DEMO_DIR, PORTRAIT, SPEECH
from talkinghead.serve.queue import QueueFull
from talkinghead.serve.schemas import JobOut
from talkinghead.serve.service import JobService
from talkinghead.serve.uploads import UploadError

__all__ = ["build_page", "mount_page"]

POLL_SECONDS = 0.5
STAGE_NAMES = {
    "prepare": "Preparing the portrait and speech",
    "denoise": "Generating motion",
    "decode": "Rendering frames",
}


def mount_page(app: FastAPI, service: JobService) -> FastAPI:
    """Mount the page at / (password = the server's token, when it has one)."""
    token = service.config.token
    auth = None
    if token is not None:

        def auth(_user: str, password: str) -> bool:
            return secrets.compare_digest(password.encode(), token.encode())

    return gr.mount_gradio_app(
        app,
        build_page(service),
        path="/",
        auth=auth,
        footer_links=["api"],
        theme=_offline_theme(),
        max_file_size=service.config.limits.max_speech_bytes,
    )


def _offline_theme() -> gr.themes.Base:
    """The default look with the system's fonts: the page makes no request to a font service."""
    return gr.themes.Default(
        font=["ui-sans-serif", "system-ui", "sans-serif"],
        font_mono=["ui-monospace", "Consolas", "monospace"],
    )


def build_page(service: JobService) -> gr.Blocks:
    default = service.config.models[0]
    spec = service.specs[default]
    # a family whose num_steps defaults to None (the model's, e.g. DAWN) starts the slider at 20
    steps_default = int(
        spec.defaults.get("num_steps") or getattr(spec.options_class, "num_steps", None) or 20
    )
    with gr.Blocks(title="talkinghead", analytics_enabled=False) as page:
        gr.Markdown(
            "## talkinghead\nA portrait and a speech recording become a talking-head "
            "video. The same jobs are on the REST API: see [/docs](/docs)."
        )
        with gr.Row():
            with gr.Column():
                portrait = gr.Image(
                    type="filepath", label="Portrait", sources=["upload"], elem_id="portrait"
                )
                speech = gr.Audio(
                    type="filepath", label="Speech", sources=["upload"], elem_id="speech"
                )
                model = gr.Dropdown(list(service.specs), value=default, label="Model")
                with gr.Row():
                    seed = gr.Number(0, precision=0, label="Seed")
                    steps = gr.Slider(
                        1,
                        service.config.limits.max_steps,
                        value=steps_default,
                        step=1,
                        label="Sampler steps",
                        elem_id="steps",
                    )
                extra = gr.Textbox(
                    "{}",
                    label="More options (JSON)",
                    lines=1,
                    info='any option of GET /v1/models, e.g. {"motion_scale": 0.5}',
                )
                run = gr.Button("Generate", variant="primary", elem_id="generate")
            with gr.Column():
                status = gr.Markdown(
                    "Upload a portrait and a speech clip, then Generate.", elem_id="status"
                )
                video = gr.Video(label="Result", buttons=["download"], elem_id="result")
        gr.Examples(
            [[str(DEMO_DIR / PORTRAIT), str(DEMO_DIR / SPEECH)]],
            inputs=[portrait, speech],
            label="The demo model's own portrait and speech",
        )

        def on_generate(*values: Any) -> Iterator[tuple[str, Any]]:
            yield from _generate(service, *values)

        run.click(
            on_generate,
            inputs=[portrait, speech, model, seed, steps, extra],
            outputs=[status, video],
            # each call only follows its job; the job queue bounds the real work
            concurrency_limit=None,
        )
    return page


def _generate(
    service: JobService,
    portrait: str | None,
    speech: str | None,
    model: str,
    seed: float | None,
    steps: float,
    extra: str,
) -> Iterator[tuple[str, Any]]:
    if not portrait or not speech:
        raise gr.Error("Upload a portrait and a speech clip first.")
    try:
        options = json.loads(extra or "{}")
    except json.JSONDecodeError:
        raise gr.Error(
            '"More options" is not valid JSON; write an object such as {"seed": 0}.'
        ) from None
    if not isinstance(options, dict):
        raise gr.Error('"More options" must be a JSON object such as {"seed": 0}.')
    options.setdefault("num_steps", int(steps))
    if seed is not None:
        options.setdefault("seed", int(seed))
    try:
        with open(portrait, "rb") as face, open(speech, "rb") as voice:
            job = service.submit(face, voice, json.dumps(options), model)
    except (UploadError, QueueFull) as err:
        raise gr.Error(str(err)) from None
    while True:
        current = service.queue.get(job.id)
        if current is None:
            raise gr.Error("The job was removed.")
        view = service.view(current)
        yield _describe(view), None
        if view.state in ("succeeded", "failed", "canceled"):
            break
        time.sleep(POLL_SECONDS)
    if view.state != "succeeded":
        raise gr.Error(view.error or f"The job was {view.state}.")
    # the page gets its own copy: result files are otherwise served only through the API
    copy = Path(tempfile.mkdtemp(prefix="talkinghead-page-")) / f"{job.id}.mp4"
    shutil.copyfile(service.result_path(current), copy)
    yield _describe(view), str(copy)


def _describe(view: JobOut) -> str:
    if view.state == "queued":
        return f"Queued ({view.position or 0} ahead). Job `{view.id}`."
    if view.state == "running":
        stage = STAGE_NAMES.get(view.stage or "", view.stage or "Starting")
        count = f" {view.stage_done}/{view.stage_total}" if view.stage_total else ""
        eta = f" · about {view.eta_seconds:.0f} s left" if view.eta_seconds is not None else ""
        return f"**{stage}**{count}{eta}. Job `{view.id}`."
    if view.state == "succeeded" and view.result is not None:
        r = view.result
        return (
            f"Done: {r.frames} frames at {r.fps} fps in {r.seconds:.1f} s (seed {r.seed}). "
            f"Job `{view.id}`."
        )
    return f"{view.state.capitalize()}: {view.error or ''} Job `{view.id}`."
