"""Access rules of the app (in process, no workers): bearer token, CORS, ids, options parsing."""

from __future__ import annotations

from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from talkinghead.dawn.configs import GenerateOptions
from talkinghead.serve.app import build_app
from talkinghead.serve.config import Limits, ServeConfig
from talkinghead.serve.options import parse_options
from talkinghead.serve.uploads import UploadError


def _client(tmp_path: Path, **settings) -> TestClient:
    config = ServeConfig(data_dir=tmp_path / "data", web=False, **settings)
    return TestClient(build_app(config, start_workers=False))


def test_bearer_token_guards_the_api_but_not_health(tmp_path: Path) -> None:
    with _client(tmp_path, token="s3cret") as client:
        answer = client.get("/v1/models")
        assert answer.status_code == 401 and answer.headers["www-authenticate"] == "Bearer"
        assert "bearer token" in answer.json()["error"]
        wrong = client.get("/v1/jobs", headers={"Authorization": "Bearer nope"})
        assert wrong.status_code == 401
        right = client.get("/v1/models", headers={"Authorization": "Bearer s3cret"})
        assert right.status_code == 200 and right.json()[0]["name"] == "demo"
        assert client.get("/healthz").status_code == 200


def test_cors_is_off_unless_configured(tmp_path: Path) -> None:
    origin = {"Origin": "https://app.example"}
    with _client(tmp_path / "a") as client:
        assert "access-control-allow-origin" not in client.get("/v1/models", headers=origin).headers
    with _client(tmp_path / "b", cors_origins=("https://app.example",)) as client:
        allowed = client.get("/v1/models", headers=origin).headers
        assert allowed["access-control-allow-origin"] == "https://app.example"
        other = client.get("/v1/models", headers={"Origin": "https://evil.example"}).headers
        assert "access-control-allow-origin" not in other


@pytest.mark.parametrize("job_id", ["..", "..%2F..%2Fetc%2Fpasswd", "a" * 22 + "/", "x" * 200])
def test_job_ids_that_are_not_ids_are_404(tmp_path: Path, job_id: str) -> None:
    with _client(tmp_path) as client:
        for path in (f"/v1/jobs/{job_id}", f"/v1/jobs/{job_id}/result"):
            answer = client.get(path)
            assert answer.status_code == 404 and "error" in answer.json()


def test_options_follow_the_options_class() -> None:
    limits = Limits()
    parsed = parse_options(
        '{"seed": 3, "eta": 0, "window": null}', GenerateOptions, limits, {"crop": False}
    )
    assert parsed == {"crop": False, "seed": 3, "eta": 0.0, "window": None}
    GenerateOptions(**parsed)
    for bad in (
        '{"seed": true}',
        '{"num_steps": 1.5}',
        '{"eta": "x"}',
        "[1]",
        '{"eta": 1e999}',
        '{"compile": true}',
        '{"decode_batch": 0}',
        '{"pose": [1, 2]}',
    ):
        with pytest.raises(UploadError) as err:
            parse_options(bad, GenerateOptions, limits)
        assert err.value.status == 422 and "\n" not in str(err.value)
