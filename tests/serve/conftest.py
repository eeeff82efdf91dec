"""Real servers for the serving tests: ``talkinghead serve`` processes on loopback, the demo model.

Settings are tiny so the whole folder runs in a few minutes on 2 cores: a 0.6 s speech clip (15
frames) and 2 sampler steps per job. ``ServerProcess`` starts the real command in a subprocess
(so a test can kill -9 it) and waits for /healthz.
"""

from __future__ import annotations

import functools
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from importlib.util import find_spec
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pytest
from scipy.io import wavfile

from talkinghead.demo import DEMO_DIR, PORTRAIT, SPEECH

if TYPE_CHECKING:
    import httpx

# without the serve extras (make test installs them) this folder is not collected
NEEDED = ("fastapi", "sqlalchemy", "gradio", "httpx", "uvicorn")
collect_ignore_glob = ["test_*.py"] if any(find_spec(m) is None for m in NEEDED) else []

FAST_OPTIONS = '{"num_steps": 2, "seed": 0}'
START_TIMEOUT = 120.0  # seconds for a server to import torch and load the demo model


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class ServerProcess:
    """One ``talkinghead serve`` subprocess on 127.0.0.1."""

    def __init__(self, data_dir: Path, *extra: str, log: Path | None = None) -> None:
        self.data_dir = data_dir
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = log or data_dir.parent / f"server-{self.port}.log"
        env = {
            **os.environ,
            "OMP_NUM_THREADS": "1",
            "HF_HUB_OFFLINE": "1",
            "GRADIO_ANALYTICS_ENABLED": "False",
        }
        env.pop("TALKINGHEAD_TOKEN", None)
        cmd = [
            sys.executable,
            "-m",
            "talkinghead",
            "serve",
            "--port",
            str(self.port),
            "--data-dir",
            str(data_dir),
            *extra,
        ]
        self._log_file = open(self.log, "ab")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen(cmd, stdout=self._log_file, stderr=subprocess.STDOUT, env=env)
        import httpx

        self.client = httpx.Client(base_url=self.url, timeout=30.0)

    def wait_ready(self, timeout: float = START_TIMEOUT) -> ServerProcess:
        import httpx

        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"server exited with {self.proc.returncode}:\n{self.tail()}")
            try:
                if self.client.get("/healthz").status_code == 200:
                    return self
            except httpx.TransportError:
                pass
            time.sleep(0.3)
        raise TimeoutError(f"server not ready in {timeout} s:\n{self.tail()}")

    def tail(self, lines: int = 40) -> str:
        return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])

    def kill9(self) -> None:
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(30)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.kill9()
        self.client.close()
        self._log_file.close()

    # -- API helpers -----------------------------------------------------------------------------

    def submit(
        self,
        speech: Path,
        portrait: Path = DEMO_DIR / PORTRAIT,
        options: str = FAST_OPTIONS,
        **headers: str,
    ) -> httpx.Response:
        with open(portrait, "rb") as face, open(speech, "rb") as voice:
            return self.client.post(
                "/v1/jobs",
                files={"portrait": ("p", face), "speech": ("s", voice)},
                data={"options": options},
                headers=headers,
            )

    def wait_state(self, job_id: str, states: tuple[str, ...], timeout: float = 120.0) -> dict:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            job = self.client.get(f"/v1/jobs/{job_id}").json()
            if job["state"] in states:
                return job
            time.sleep(0.2)
        raise TimeoutError(f"job {job_id} still {job['state']} after {timeout} s:\n{self.tail()}")


def make_speech(path: Path, seconds: float) -> Path:
    """The first ``seconds`` of the demo speech as a 16 kHz wav."""
    rate, samples = wavfile.read(DEMO_DIR / SPEECH)
    count = int(rate * seconds)
    reps = -(-count // len(samples))
    wavfile.write(path, rate, np.tile(samples, reps)[:count])
    return path


@pytest.fixture(scope="session")
def media(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("media")
    return {
        "portrait": DEMO_DIR / PORTRAIT,
        "short": make_speech(root / "short.wav", 0.6),  # 15 frames
        "long": make_speech(root / "long.wav", 4.0),  # long enough to cancel mid-run
    }


@pytest.fixture(scope="session")
def live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    """The shared server: demo model, one CPU worker, the web page, a queue of 24."""
    root = tmp_path_factory.mktemp("live")
    server = ServerProcess(root / "data", "--max-queued", "24", "--workers", "1")
    try:
        yield server.wait_ready()
    finally:
        server.stop()


def files_under(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if p.is_file())


def _pg_binary(name: str) -> str | None:
    found = sorted(Path("/usr/lib/postgresql").glob(f"*/bin/{name}"))
    return str(found[-1]) if found else shutil.which(name)


@pytest.fixture(scope="session")
def postgres_url() -> Iterator[str]:
    """A throwaway PostgreSQL server (Debian's package; .ci/run installs it) on 127.0.0.1."""
    initdb, pg_ctl = _pg_binary("initdb"), _pg_binary("pg_ctl")
    if initdb is None or pg_ctl is None:
        pytest.skip("PostgreSQL is not installed (apt-get install postgresql)")
    # not under pytest's tmp folders: those are private to root, and postgres runs as its own user
    root = Path(tempfile.mkdtemp(prefix="talkinghead-pg-"))
    data = root / "cluster"
    port = free_port()
    prefix: list[str] = []
    if os.geteuid() == 0:  # postgres refuses to run as root: run it as the package's user
        prefix = ["runuser", "-u", "postgres", "--"]
        shutil.chown(root, "postgres")
    run = functools.partial(subprocess.run, check=True, capture_output=True)
    run([*prefix, initdb, "-D", str(data), "-A", "trust", "-U", "postgres", "--no-sync"])
    opts = f"-k {root} -p {port} -h 127.0.0.1 -c fsync=off -c max_connections=200"
    run([*prefix, pg_ctl, "-D", str(data), "-o", opts, "-l", str(root / "pg.log"), "-w", "start"])
    try:
        yield f"postgresql+psycopg://postgres@127.0.0.1:{port}/postgres"
    finally:
        run([*prefix, pg_ctl, "-D", str(data), "-m", "immediate", "stop"])
        shutil.rmtree(root, ignore_errors=True)
