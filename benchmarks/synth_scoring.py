"""What the benchmarks that score a trained model on a ``talkinghead data synth`` set share: their
``--model --data --threads --device --out`` flags, opening the model and the set, and the JSON.

Used by ``diffused_heads_quality.py``, ``diffused_heads_drift.py`` and ``diffused_heads_probe.py``.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import torch
from provenance import provenance

from talkinghead.data.layout import CLIPS_DIR, ClipReader, Manifest, read_manifest
from talkinghead.registry import load_pipeline


def add_scoring_flags(parser: argparse.ArgumentParser, data_help: str) -> None:
    """``--model``, ``--data`` (``data_help``), ``--threads``, ``--device`` and ``--out``."""
    parser.add_argument("--model", required=True, help="a Diffused Heads model directory or name")
    parser.add_argument("--data", required=True, help=data_help)
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--device", default="cpu", help="cpu, cuda ...")
    parser.add_argument("--out", type=Path, default=None, help="folder for the JSON")


def open_model_and_data(args: argparse.Namespace) -> tuple[Any, Manifest]:
    """The pipeline of ``--model`` on ``--device`` with ``--threads``, and ``--data``'s manifest."""
    torch.set_num_threads(args.threads)
    return load_pipeline(args.model, device=args.device), read_manifest(args.data)


def clip_reader(args: argparse.Namespace, manifest: Manifest, clip_id: str) -> ClipReader:
    return ClipReader(Path(args.data) / CLIPS_DIR / clip_id, manifest.audio_feature)


def write_result(args: argparse.Namespace, argv: list[str] | None, name: str, result: dict) -> None:
    """``result`` plus the command and machine into ``--out/name`` (nothing without ``--out``)."""
    if args.out is None:
        return
    args.out.mkdir(parents=True, exist_ok=True)
    full = {**result, **provenance(argv, threads=args.threads, device=args.device)}
    (args.out / name).write_text(json.dumps(full, indent=2))
