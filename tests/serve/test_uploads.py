"""Bad uploads get a 4xx with one JSON sentence and leave no job and no file behind."""

from __future__ import annotations

import io
import wave
from pathlib import Path

import av
import numpy as np
import pytest
from PIL import Image

from talkinghead.demo import DEMO_DIR, PORTRAIT

from .conftest import ServerProcess, files_under

pytestmark = pytest.mark.slow


def _png(size: tuple[int, int], mode: str = "L") -> bytes:
    buf = io.BytesIO()
    Image.new(mode, size).save(buf, format="PNG", optimize=False)
    return buf.getvalue()


def _two_hour_flac() -> bytes:
    """A real, decodable 2-hour recording of silence (8 kHz FLAC, ~1.3 MB)."""
    buf = io.BytesIO()
    with av.open(buf, "w", format="flac") as out:
        stream = out.add_stream("flac", rate=8000, layout="mono")
        minute = np.zeros((1, 8000 * 60), np.int16)
        for i in range(120):
            frame = av.AudioFrame.from_ndarray(minute, format="s16", layout="mono")
            frame.sample_rate, frame.pts = 8000, i * minute.shape[1]
            for packet in stream.encode(frame):
                out.mux(packet)
        for packet in stream.encode(None):
            out.mux(packet)
    return buf.getvalue()


def _silent_wav(seconds: float) -> bytes:
    buf = io.BytesIO()
    with wave.open(buf, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(16000)
        w.writeframes(b"\0\0" * int(16000 * seconds))
    return buf.getvalue()


def _cases(short_wav: bytes) -> dict[str, tuple[dict, dict, int]]:
    """name -> (files, form fields, expected status)."""
    good_png = (DEMO_DIR / PORTRAIT).read_bytes()
    face = ("face.png", good_png)
    voice = ("voice.wav", short_wav)
    return {
        "corrupt image": (
            {"portrait": ("a.png", b"\x89PNG\r\n\x1a\n" + b"\x00" * 300), "speech": voice},
            {},
            422,
        ),
        "truncated image": (
            {"portrait": ("a.png", good_png[: len(good_png) // 2]), "speech": voice},
            {},
            422,
        ),
        "corrupt audio": (
            {
                "portrait": face,
                "speech": ("a.wav", b"RIFF\x24\x00\x00\x00WAVEfmt " + b"\xff" * 200),
            },
            {},
            422,
        ),
        "text named .wav": (
            {"portrait": face, "speech": ("speech.wav", b"hello, I am text\n" * 50)},
            {},
            422,
        ),
        "text named .png": (
            {"portrait": ("face.png", b"not an image at all\n" * 50), "speech": voice},
            {},
            422,
        ),
        "2-hour audio": ({"portrait": face, "speech": ("long.flac", _two_hour_flac())}, {}, 413),
        "silent audio": ({"portrait": face, "speech": ("quiet.wav", _silent_wav(1.0))}, {}, 422),
        "20,000-pixel image": (
            {"portrait": ("wide.png", _png((20_000, 8))), "speech": voice},
            {},
            413,
        ),
        "PNG zip bomb": (
            {"portrait": ("bomb.png", _png((8000, 8000), "1")), "speech": voice},
            {},
            413,
        ),
        "path as file name": (
            {"portrait": ("../../etc/passwd", good_png), "speech": voice},
            {},
            422,
        ),
        "missing speech": ({"portrait": face}, {}, 422),
        "options not JSON": ({"portrait": face, "speech": voice}, {"options": "{seed: 1"}, 422),
        "unknown option": ({"portrait": face, "speech": voice}, {"options": '{"x": 1}'}, 422),
        "too many steps": (
            {"portrait": face, "speech": voice},
            {"options": '{"num_steps": 100000}'},
            422,
        ),
        "wrong option type": (
            {"portrait": face, "speech": voice},
            {"options": '{"seed": "zero"}'},
            422,
        ),
        "unknown model": ({"portrait": face, "speech": voice}, {"model": "nope"}, 404),
    }


def test_bad_uploads_leave_nothing(live: ServerProcess, media) -> None:
    short_wav = Path(media["short"]).read_bytes()
    jobs_before = live.client.get("/v1/jobs").json()["total"]
    files_before = files_under(live.data_dir / "jobs")
    failures = []
    for name, (files, data, status) in _cases(short_wav).items():
        answer = live.client.post("/v1/jobs", files=files, data=data)
        body = answer.json()
        if answer.status_code != status or not isinstance(body.get("error"), str):
            failures.append(f"{name}: {answer.status_code} {body}")
        elif body["error"].count(". ") > 0 or "\n" in body["error"]:
            failures.append(f"{name}: not one sentence: {body['error']}")
    assert not failures, "\n".join(failures)
    assert live.client.get("/v1/jobs").json()["total"] == jobs_before
    assert files_under(live.data_dir / "jobs") == files_before
    assert not list((live.data_dir / "uploads").iterdir())
    assert not Path("/etc/passwd").read_bytes().startswith(b"\x89PNG")


def test_request_body_limit_applies_before_parsing(live: ServerProcess) -> None:
    big = b"\0" * (65 * 1024 * 1024)
    answer = live.client.post("/v1/jobs", files={"portrait": ("a.png", big), "speech": ("b", b"x")})
    assert answer.status_code == 413 and "larger than" in answer.json()["error"]

    def chunks():  # no Content-Length: the limit is counted while reading
        yield (
            b'--xyz\r\nContent-Disposition: form-data; name="portrait"; filename="a"\r\n'
            b"Content-Type: application/octet-stream\r\n\r\n"
        )
        for _ in range(70):
            yield b"\0" * (1024 * 1024)

    answer = live.client.post(
        "/v1/jobs",
        content=chunks(),
        headers={"content-type": "multipart/form-data; boundary=xyz"},
    )
    assert answer.status_code == 413
    assert not list((live.data_dir / "uploads").iterdir())
