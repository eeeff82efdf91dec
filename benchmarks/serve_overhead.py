"""Server overhead against the plain CLI on the demo model (issue #14): jobs per minute, one worker.

    python benchmarks/serve_overhead.py [--jobs 8] [--steps 10] [--threads 1] [--out /tmp/serve-bench]

Three ways to make the same N videos (the packaged demo portrait speaking the packaged 5 s speech,
``--steps`` DDIM steps, seeds 0..N-1), each after one untimed warm-up job:

* ``in-process``: the CLI's own work with the model kept loaded: ``demo_pipeline()`` once, then
  ``pipeline(...)`` + ``save_result`` per job (the baseline: what a server can at best match);
* ``cli``: one ``talkinghead demo`` process per job (model loaded every time: what a shell loop gets);
* ``server``: ``talkinghead serve --no-web --workers 1`` in a subprocess, all N jobs submitted over
  HTTP at once, the clock stopped when the last one succeeded (uploads, checks, queue writes,
  progress writes and polling included).

Overhead = 1 - server rate / in-process rate; the goal is within 5 %. Do not run it while other
jobs load the machine (``loadavg`` is recorded). Prints a table and writes ``<out>/serve_overhead.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import httpx
import torch
from provenance import provenance

from talkinghead.dawn.configs import GenerateOptions
from talkinghead.demo import DEMO_DIR, PORTRAIT, SPEECH, demo_pipeline
from talkinghead.outputs import save_result


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--jobs", type=int, default=8, help="timed jobs per way")
    p.add_argument("--steps", type=int, default=10, help="DDIM steps per job")
    p.add_argument("--threads", type=int, default=1, help="torch threads (all three ways)")
    p.add_argument("--skip-cli", action="store_true", help="leave out the process-per-job way")
    p.add_argument("--out", default="/tmp/serve-bench", help="folder for the JSON and videos")
    return p.parse_args(argv)


def in_process(args: argparse.Namespace, out: Path) -> float:
    torch.set_num_threads(args.threads)
    pipe = demo_pipeline()

    def one(seed: int) -> None:
        options = GenerateOptions(num_steps=args.steps, seed=seed, crop=False)
        result = pipe(DEMO_DIR / PORTRAIT, DEMO_DIR / SPEECH, options)
        save_result(result, out / f"inproc-{seed}.mp4", audio_path=DEMO_DIR / SPEECH)

    return _timed(one, args.jobs)


def cli(args: argparse.Namespace, out: Path, env: dict[str, str]) -> float:
    def one(seed: int) -> None:
        subprocess.run(
            [
                sys.executable,
                "-m",
                "talkinghead",
                "demo",
                "-q",
                "--seed",
                str(seed),
                "--steps",
                str(args.steps),
                "-o",
                str(out / f"cli-{seed}.mp4"),
            ],
            check=True,
            env=env,
        )

    return _timed(one, args.jobs)


def _timed(job: Callable[[int], None], jobs: int) -> float:
    """Seconds for ``job(seed)`` over seeds 0..jobs-1, after one untimed warm-up job."""
    job(10_000)
    start = time.perf_counter()
    for seed in range(jobs):
        job(seed)
    return time.perf_counter() - start


def server(args: argparse.Namespace, out: Path, env: dict[str, str]) -> float:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    log = open(out / "server.log", "wb")  # noqa: SIM115 - closed below
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "talkinghead",
            "serve",
            "--no-web",
            "--workers",
            "1",
            "--port",
            str(port),
            "--data-dir",
            str(out / "serve-data"),
            "--max-queued",
            str(args.jobs + 1),
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
        env=env,
    )
    client = httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=60)
    try:
        while True:
            try:
                if client.get("/healthz").status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if proc.poll() is not None:
                raise RuntimeError(f"the server exited; see {out / 'server.log'}")
            time.sleep(0.2)

        def submit(seed: int) -> str:
            with open(DEMO_DIR / PORTRAIT, "rb") as face, open(DEMO_DIR / SPEECH, "rb") as voice:
                answer = client.post(
                    "/v1/jobs",
                    files={"portrait": ("p.png", face), "speech": ("s.wav", voice)},
                    data={"options": json.dumps({"num_steps": args.steps, "seed": seed})},
                )
            answer.raise_for_status()
            return answer.json()["id"]

        def wait(ids: list[str]) -> None:
            pending = set(ids)
            while pending:
                for job_id in list(pending):
                    state = client.get(f"/v1/jobs/{job_id}").json()["state"]
                    if state == "succeeded":
                        pending.discard(job_id)
                    elif state in ("failed", "canceled"):
                        raise RuntimeError(f"job {job_id} {state}")
                time.sleep(0.2)

        wait([submit(10_000)])
        start = time.perf_counter()
        wait([submit(seed) for seed in range(args.jobs)])
        return time.perf_counter() - start
    finally:
        proc.terminate()
        proc.wait(60)
        client.close()
        log.close()


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "OMP_NUM_THREADS": str(args.threads), "HF_HUB_OFFLINE": "1"}
    seconds = {"in-process": in_process(args, Path(tempfile.mkdtemp(dir=out)))}
    if not args.skip_cli:
        seconds["cli"] = cli(args, out, env)
    seconds["server"] = server(args, out, env)
    rates = {way: round(60 * args.jobs / s, 3) for way, s in seconds.items()}
    overhead = 1 - rates["server"] / rates["in-process"]
    result = {
        "jobs": args.jobs,
        "steps": args.steps,
        "seconds": seconds,
        "jobs_per_minute": rates,
        "server_overhead": round(overhead, 4),
        **provenance(argv, threads=args.threads, device="cpu"),
    }
    print(f"{'way':<12}{'seconds':>10}{'jobs/min':>10}")
    for way, spent in seconds.items():
        print(f"{way:<12}{spent:>10.1f}{rates[way]:>10.2f}")
    print(f"server overhead against in-process: {100 * overhead:.1f} %")
    (out / "serve_overhead.json").write_text(json.dumps(result, indent=2) + "\n")
    return result


if __name__ == "__main__":
    main()
