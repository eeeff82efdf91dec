"""The ``serve`` and ``batch`` subcommands' flags and entry points (``cli.py`` registers them).

Nothing heavy is imported until a command runs, so ``talkinghead --help`` works without the
``serve`` extra installed; running one without it says which extra to install.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from talkinghead.cli.flags import add_dataclass_flags, add_process_flags, options_from_args
from talkinghead.serve.config import TOKEN_ENV, Limits, ServeConfig, default_data_dir

__all__ = ["add_batch", "add_serve"]

MISSING_EXTRA = "the server needs the 'serve' extra: pip install 'talkinghead[serve]'"
# ServeConfig / Limits fields that are `serve` flags (help and default from their field comments)
SERVE_FLAGS = ("max_queued", "token", "web", "lease_seconds", "max_speech_seconds")


def add_serve(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("serve", help="REST API + web page over a persistent job queue")
    p.add_argument(
        "--host", default="127.0.0.1", help="address to bind (default 127.0.0.1: this machine only)"
    )
    p.add_argument("--port", type=int, default=8000, help="TCP port (default 8000)")
    p.add_argument(
        "--model",
        action="append",
        default=None,
        metavar="NAME_OR_DIR",
        help="model to serve, repeatable; the first is the default (default: demo)",
    )
    p.add_argument(
        "--data-dir",
        default=None,
        help=f"jobs and the embedded queue (default {default_data_dir()})",
    )
    p.add_argument(
        "--db",
        default=None,
        metavar="URL",
        help="shared queue, e.g. postgresql+psycopg://user@host/db (default: SQLite in --data-dir)",
    )
    p.add_argument(
        "--workers",
        type=int,
        default=None,
        help="workers (default: one per GPU, else 1 on the CPU)",
    )
    p.add_argument("--device", default=None, help="put every worker on this device (cpu, cuda:1)")
    p.add_argument(
        "--cors-origin",
        action="append",
        default=[],
        metavar="ORIGIN",
        help="allow browser calls from this origin (repeatable; default: none)",
    )
    add_dataclass_flags(
        p, [ServeConfig, Limits], only=SERVE_FLAGS, aliases={"lease_seconds": ("--lease",)}
    )
    # a server idles between jobs: glibc hands freed memory back (talkinghead.allocator)
    add_process_flags(
        p,
        reuse_memory=False,
        threads_help="CPU threads per worker (default: $OMP_NUM_THREADS, else the CPUs this "
        "process may use); several CPU workers each keep to their share of the CPUs",
    )
    p.set_defaults(func=run_serve)


def run_serve(args: argparse.Namespace) -> int:
    from talkinghead.cli import CLIError

    try:
        from talkinghead.serve.app import serve
        from talkinghead.serve.pool import DataDirLocked, default_devices
    except ImportError as err:
        raise CLIError(MISSING_EXTRA) from err
    devices = default_devices(args.workers, args.device)
    config = options_from_args(
        ServeConfig,
        args,
        data_dir=Path(args.data_dir) if args.data_dir else default_data_dir(),
        db_url=args.db,
        models=tuple(args.model or ["demo"]),
        devices=devices,
        token=args.token or os.environ.get(TOKEN_ENV) or None,
        cors_origins=tuple(args.cors_origin),
        limits=options_from_args(Limits, args),
    )
    try:
        serve(config, host=args.host, port=args.port)
    except (DataDirLocked, ValueError) as err:
        raise CLIError(str(err)) from err
    return 0


def add_batch(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("batch", help="many generations from a CSV/JSONL list (resumable)")
    p.add_argument(
        "jobs",
        help="jobs.csv or jobs.jsonl: columns image, audio, optional output, "
        "model and option names (seed, num_steps, ...)",
    )
    p.add_argument("-o", "--output-dir", required=True, help="folder for the mp4s and report.jsonl")
    p.add_argument("--model", default="demo", help="model for rows that name none (default demo)")
    p.add_argument(
        "--steps",
        type=int,
        default=None,
        help="num_steps for rows that set none (default: the model's)",
    )
    p.add_argument(
        "--device", default=None, help="cpu, cuda, cuda:1 ... (default: cuda if present)"
    )
    p.add_argument(
        "--ray",
        nargs="?",
        const="local",
        default=None,
        metavar="ADDRESS",
        help="spread the items over a Ray cluster (no ADDRESS: start a local one)",
    )
    p.add_argument(
        "--ray-workers",
        type=int,
        default=None,
        help="Ray actors (default: one per GPU of the cluster, else 2)",
    )
    add_process_flags(
        p,
        reuse_memory=True,
        threads_help="CPU threads (default: $OMP_NUM_THREADS, else the CPUs this process may "
        "use; torchrun ranks on the CPU: at most each rank's share)",
    )
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=run_batch_command)


def run_batch_command(args: argparse.Namespace) -> int:
    from talkinghead.cli import CLIError
    from talkinghead.serve.batch import BatchError, run_batch

    try:
        summary = run_batch(
            Path(args.jobs),
            Path(args.output_dir),
            model=args.model,
            steps=args.steps,
            device=args.device,
            ray_address=args.ray,
            ray_workers=args.ray_workers,
            progress=not args.quiet,
        )
    except BatchError as err:
        raise CLIError(str(err)) from err
    return 1 if summary.failed else 0
