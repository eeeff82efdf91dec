"""``talkinghead serve``: one process holding the queue, its workers, the REST API and the page.

``build_app(config)`` assembles them (tests use it with tiny settings); ``serve(config, host,
port)`` runs it under uvicorn, on 127.0.0.1 unless told otherwise. The request body is capped
before FastAPI parses it (``BodyLimit``), CORS headers exist only for configured origins, and the
Gradio page is mounted at / last, so /v1, /docs and /healthz take precedence.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI

from talkinghead import __version__
from talkinghead.serve.api import add_routes
from talkinghead.serve.config import ServeConfig
from talkinghead.serve.pool import WorkerPool
from talkinghead.serve.queue import JobQueue
from talkinghead.serve.service import JobService

__all__ = ["BodyLimit", "build_app", "serve"]

logger = logging.getLogger(__name__)


class BodyLimit:
    """ASGI middleware: a request body larger than ``limit`` bytes gets 413 (JSON), read no
    further than the limit whatever its Content-Length says."""

    def __init__(self, app: Any, limit: int) -> None:
        self.app = app
        self.limit = limit

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = dict(scope.get("headers") or []).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.limit:
            await self._reject(send)
            return
        seen = 0
        over = False

        async def limited_receive() -> dict:
            nonlocal seen, over
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.limit:
                    over = True
                    return {"type": "http.disconnect"}
            return message

        started = False

        async def guarded_send(message: dict) -> None:
            nonlocal started
            if over:  # the app answered a body we cut short: replace its answer
                if message["type"] == "http.response.start" and not started:
                    started = True
                    await self._reject(send)
                return
            started = started or message["type"] == "http.response.start"
            await send(message)

        await self.app(scope, limited_receive, guarded_send)

    async def _reject(self, send: Any) -> None:
        body = b'{"error":"the request is larger than %d MiB; send smaller files"}' % (
            self.limit // (1 << 20)
        )
        await send(
            {
                "type": "http.response.start",
                "status": 413,
                "headers": [
                    (b"content-type", b"application/json"),
                    (b"content-length", str(len(body)).encode()),
                    (b"connection", b"close"),
                ],
            }
        )
        await send({"type": "http.response.body", "body": body})


def build_app(config: ServeConfig, *, start_workers: bool = True) -> FastAPI:
    """The whole server for ``config``; workers start and stop with the app's lifespan."""
    queue = JobQueue(config)
    pool = WorkerPool(queue, config) if start_workers else None
    service = JobService(config, queue, pool)

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        if pool is not None:
            pool.start()
        try:
            yield
        finally:
            if pool is not None:
                pool.stop()
            queue.close()

    app = FastAPI(
        title="talkinghead",
        version=__version__,
        lifespan=lifespan,
        description="Portrait + speech -> talking-head video. Submit a job, poll it, download "
        'the mp4. Every error is JSON: {"error": "<one sentence>"}.',
    )
    app.state.service = service
    add_routes(app, service)
    if config.cors_origins:
        from fastapi.middleware.cors import CORSMiddleware

        app.add_middleware(
            CORSMiddleware,
            allow_origins=list(config.cors_origins),
            allow_methods=["GET", "POST", "DELETE"],
            allow_headers=["Authorization", "Content-Type"],
        )
    app.add_middleware(BodyLimit, limit=config.limits.max_request_bytes)
    if config.web:
        from talkinghead.serve.web import mount_page

        app = mount_page(app, service)
    return app


def serve(config: ServeConfig, host: str = "127.0.0.1", port: int = 8000) -> None:
    """Run the server until interrupted (Ctrl-C returns running jobs to the queue)."""
    import uvicorn

    app = build_app(config)
    logger.info(
        "talkinghead serve: http://%s:%d (API docs at /docs), data in %s",
        host,
        port,
        config.data_dir,
    )
    uvicorn.run(app, host=host, port=port, log_level="info", timeout_graceful_shutdown=5)
