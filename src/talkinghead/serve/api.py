"""The REST API under /v1 (FastAPI): jobs, models, health; errors as one-sentence JSON.

Routes (OpenAPI at /docs and /openapi.json)::

    POST   /v1/jobs               multipart: portrait, speech, options (JSON), model -> 201 job
    GET    /v1/jobs               newest first, paged (limit, offset, state)
    GET    /v1/jobs/{id}          state, stage, progress, ETA, error
    GET    /v1/jobs/{id}/result   the mp4 (409 until the job succeeded)
    DELETE /v1/jobs/{id}          cancel a queued or running job; remove a finished one
    GET    /v1/models             served models and their options
    GET    /healthz               200 once every worker has its model loaded, else 503
"""

from __future__ import annotations

import secrets
from typing import Annotated

from fastapi import APIRouter, Depends, FastAPI, File, Form, Query, Request, UploadFile
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from starlette.exceptions import HTTPException

from talkinghead.serve.db import JOB_STATES
from talkinghead.serve.jobfiles import is_job_id
from talkinghead.serve.queue import Job, QueueFull
from talkinghead.serve.schemas import ErrorOut, HealthOut, JobOut, JobPage, ModelOut, model_out
from talkinghead.serve.service import JobService
from talkinghead.serve.uploads import UploadError, check_client_name

__all__ = ["add_routes"]

ERRORS = {code: {"model": ErrorOut} for code in (401, 404, 409, 413, 422, 429)}
bearer = HTTPBearer(auto_error=False, description="the server's --token (when it has one)")


def add_routes(app: FastAPI, service: JobService) -> None:
    """Register the /v1 routes, /healthz and the JSON error handlers on ``app``."""
    token = service.config.token

    def authorize(
        creds: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)],
    ) -> None:
        if token is None:
            return
        given = creds.credentials if creds is not None else ""
        if not secrets.compare_digest(given.encode(), token.encode()):
            raise HTTPException(
                401,
                "a valid bearer token is required; send the header 'Authorization: Bearer <token>'",
            )

    v1 = APIRouter(prefix="/v1", dependencies=[Depends(authorize)], responses=ERRORS)

    def find(job_id: str) -> Job:
        job = service.queue.get(job_id) if is_job_id(job_id) else None
        if job is None:
            raise HTTPException(404, f"no job {job_id!r}; GET /v1/jobs lists the existing ones")
        return job

    @v1.post("/jobs", status_code=201, response_model=JobOut, summary="Queue a generation")
    def create_job(
        portrait: Annotated[
            UploadFile,
            File(description="portrait: JPEG/PNG/WebP (or a video for models that take one)"),
        ],
        speech: Annotated[UploadFile, File(description="speech: wav/mp3/flac/m4a/ogg")],
        options: Annotated[str | None, Form(description='options JSON, e.g. {"seed": 0}')] = None,
        model: Annotated[str | None, Form(description="a name from GET /v1/models")] = None,
    ) -> JSONResponse:
        check_client_name(portrait.filename, "portrait")
        check_client_name(speech.filename, "speech")
        job = service.submit(portrait.file, speech.file, options, model)
        body = service.view(job).model_dump(mode="json")
        return JSONResponse(body, status_code=201, headers={"Location": f"/v1/jobs/{job.id}"})

    @v1.get("/jobs", response_model=JobPage, summary="List jobs, newest first")
    def list_jobs(
        limit: Annotated[int, Query(ge=1, le=100)] = 20,
        offset: Annotated[int, Query(ge=0, le=10**9)] = 0,
        state: Annotated[str | None, Query(description="|".join(JOB_STATES))] = None,
    ) -> JobPage:
        if state is not None and state not in JOB_STATES:
            raise HTTPException(422, f"state must be one of {', '.join(JOB_STATES)}")
        page, total = service.queue.page(limit=limit, offset=offset, state=state)
        return JobPage(
            jobs=[service.view(j) for j in page], total=total, limit=limit, offset=offset
        )

    @v1.get("/jobs/{job_id}", response_model=JobOut, summary="A job's state and progress")
    def get_job(job_id: str) -> JobOut:
        return service.view(find(job_id))

    @v1.get(
        "/jobs/{job_id}/result",
        summary="The generated mp4 (H.264 + AAC)",
        response_class=FileResponse,
        responses={200: {"content": {"video/mp4": {}}}},
    )
    def get_result(job_id: str) -> FileResponse:
        job = find(job_id)
        path = service.result_path(job)
        if job.state != "succeeded" or not path.is_file():
            raise HTTPException(
                409,
                f"job {job_id} is {job.state}, it has no video; poll "
                f"GET /v1/jobs/{job_id} until its state is succeeded",
            )
        return FileResponse(path, media_type="video/mp4", filename=f"{job_id}.mp4")

    @v1.delete("/jobs/{job_id}", response_model=JobOut, summary="Cancel or remove a job")
    def delete_job(job_id: str) -> JobOut:
        job = find(job_id)
        if job.state in ("queued", "running"):
            canceled = service.queue.cancel(job_id)
            return service.view(canceled or job)
        service.queue.delete(job_id)
        return service.view(job).model_copy(update={"deleted": True, "result_url": None})

    @v1.get("/models", response_model=list[ModelOut], summary="Models this server runs")
    def list_models() -> list[ModelOut]:
        default = service.config.models[0]
        return [model_out(spec, spec.name == default) for spec in service.specs.values()]

    @v1.api_route(
        "/{rest:path}", methods=["GET", "POST", "PUT", "PATCH", "DELETE"], include_in_schema=False
    )
    def unknown(rest: str) -> None:
        # without this, the page mounted at / would answer unknown /v1 paths with HTML
        raise HTTPException(404, "no such path; the API is under /v1 (see /docs)")

    app.include_router(v1)

    @app.get("/healthz", response_model=HealthOut, responses={503: {"model": HealthOut}})
    def healthz() -> JSONResponse:
        pool = service.pool
        ready = sum(w.ready.is_set() for w in pool.workers) if pool else 0
        total = len(pool.workers) if pool else 0
        body = HealthOut(
            status="ok" if ready == total else "starting",
            workers=total,
            ready_workers=ready,
            queued=service.queue.count("queued"),
            running=service.queue.count("running"),
        )
        return JSONResponse(body.model_dump(), status_code=200 if ready == total else 503)

    _add_error_handlers(app)


def _add_error_handlers(app: FastAPI) -> None:
    def error(status: int, message: str, headers: dict[str, str] | None = None) -> JSONResponse:
        return JSONResponse({"error": message}, status_code=status, headers=headers)

    @app.exception_handler(UploadError)
    def _upload(_request: Request, exc: UploadError) -> JSONResponse:
        return error(exc.status, str(exc))

    @app.exception_handler(QueueFull)
    def _full(_request: Request, exc: QueueFull) -> JSONResponse:
        return error(
            429,
            f"the queue is full; retry in {exc.retry_after} s",
            {"Retry-After": str(exc.retry_after)},
        )

    @app.exception_handler(HTTPException)
    def _http(_request: Request, exc: HTTPException) -> JSONResponse:
        headers = dict(exc.headers or {})
        if exc.status_code == 401:
            headers.setdefault("WWW-Authenticate", "Bearer")
        message = exc.detail if isinstance(exc.detail, str) else "the request is invalid"
        if exc.status_code == 404 and message == "Not Found":
            message = "no such path; the API is under /v1 (see /docs)"
        if exc.status_code == 405:
            message = "this method is not allowed on this path; see /docs"
        return error(exc.status_code, message, headers)

    @app.exception_handler(RequestValidationError)
    def _invalid(_request: Request, exc: RequestValidationError) -> JSONResponse:
        return error(422, _validation_sentence(exc))


def _validation_sentence(exc: RequestValidationError) -> str:
    first = exc.errors()[0] if exc.errors() else {}
    where = [str(p) for p in first.get("loc", ()) if p not in ("body", "query", "path")]
    field = where[0] if where else "the request"
    if first.get("type") == "missing":
        if field in ("portrait", "speech"):
            return f"the multipart field '{field}' is missing; attach the {field} file"
        return f"'{field}' is required"
    return f"'{field}' is invalid: {first.get('msg', 'bad value')}; see /docs"
