"""``talkinghead eval`` (paper metrics of a folder of videos) and ``eval-synth`` (synthetic benchmark)."""

from __future__ import annotations

import argparse
import logging
import sys

from talkinghead.cli.errors import CLIError
from talkinghead.errors import first_line


def add_eval(sub: argparse._SubParsersAction) -> None:
    from talkinghead.eval.networks import WEIGHTS_ENV, weights_help
    from talkinghead.eval.options import EvalOptions

    p = sub.add_parser(
        "eval", help="DAWN Table 1 metrics of a folder of videos -> JSON + HTML report",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="metrics and the files each needs in --weights-dir (a metric without its file is "
        "reported as 'needs weights'):\n" + weights_help(),
    )
    p.add_argument("generated_dir", metavar="GENERATED_DIR", help="folder of generated videos")
    p.add_argument("--reference", default=None, metavar="REAL_DIR", help="real videos, paired by file stem")
    p.add_argument("--out", default="eval_report", help="report folder (metrics.json, report.html, cache/)")
    p.add_argument("--weights-dir", default=None, help=f"metric network weights (default: ${WEIGHTS_ENV})")
    p.add_argument("--device", default=None, help="torch device (default: cuda if available)")
    p.add_argument("--batch-size", type=int, default=EvalOptions.batch_size)
    p.add_argument("--fid-max-frames", type=int, default=EvalOptions.fid_max_frames,
                   help="frames per video used for FID (default: all)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=run_eval)


def run_eval(args: argparse.Namespace) -> int:
    from pathlib import Path

    import torch

    from talkinghead.eval.evaluate import EvalOptions, evaluate_directory, write_json
    from talkinghead.eval.report import write_report

    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    options = EvalOptions(
        batch_size=args.batch_size, fid_max_frames=args.fid_max_frames, progress=not args.no_progress
    )
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    try:
        result = evaluate_directory(
            args.generated_dir, args.reference, out_dir=out, weights_dir=args.weights_dir,
            device=device, options=options,
        )
    except (OSError, ValueError) as err:
        raise CLIError(first_line(err)) from err
    write_json(result.summary, out / "metrics.json")
    write_report(result, out / "report.html")
    log = logging.getLogger(__name__)
    for path in result.summary["skipped"]:
        log.warning("skipped unreadable video %s", path["path"])
    log.info("wrote %s and %s", out / "metrics.json", out / "report.html")
    return 0


def add_eval_synth(sub: argparse._SubParsersAction) -> None:
    from talkinghead.eval.options import SynthBenchOptions as S

    # a separate command: `eval` takes GENERATED_DIR as its first positional
    p = sub.add_parser(
        "eval-synth", help="synthetic benchmark: mouth correlation, blink rate, LFG PSNR -> JSON"
    )
    p.add_argument("data_dir", metavar="DATA_DIR", help="set made by `talkinghead data synth`")
    p.add_argument("--weights", default=None, help="model folder (e.g. from train --export)")
    p.add_argument("--preset", default=None, choices=["tiny"], help="random weights (plumbing only)")
    p.add_argument("--hubert", default=None, help="HuBERT folder for HuBERT-conditioned models")
    p.add_argument("--face3d", default=None,
                   help="3DDFA_V2 assets folder (DiffTalk finds faces and landmarks with it)")
    p.add_argument("--out", default="synth_eval.json", help="JSON summary path")
    p.add_argument("--steps", type=int, default=S.num_steps, help="sampler steps per video")
    p.add_argument("--sampler", default=None,
                   help="the family's sampler (e.g. ddim, dpmpp-2m; Diffused Heads: ancestral); "
                   "default: the family's own")
    p.add_argument("--seed", type=int, default=S.seed, help="generation seed of the first clip")
    p.add_argument("--max-clips", type=int, default=S.max_clips, help="first N held-out clips")
    p.add_argument("--pbnet", action="store_true", help="also generate with PBNet pose/blinks")
    p.add_argument("--source", choices=("first", "open"), default=S.source,
                   help="source frame: the clip's first, or its eyes-open frame nearest a "
                   "half-open mouth (how the demo portrait is chosen)")
    p.add_argument("--device", default=None, help="cpu, cuda ... (default: cuda if present)")
    p.set_defaults(func=run_eval_synth)


def run_eval_synth(args: argparse.Namespace) -> int:
    import torch

    from talkinghead.cli.generate import random_pipeline
    from talkinghead.eval.evaluate import write_json
    from talkinghead.eval.synth_benchmark import (
        SynthBenchOptions,
        format_table,
        run_synth_benchmark,
    )
    from talkinghead.registry import load_pipeline

    if args.weights is None and args.preset is None:
        raise CLIError("pass --weights MODEL_DIR (or --preset tiny for a plumbing check).")
    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    options = SynthBenchOptions(
        num_steps=args.steps,
        seed=args.seed,
        max_clips=args.max_clips,
        pbnet=args.pbnet,
        source=args.source,
        sampler=args.sampler,
    )
    loader = {"hubert_path": args.hubert, "face3d_dir": args.face3d}
    loader = {k: v for k, v in loader.items() if v}
    try:
        if args.preset is not None:
            pipeline = random_pipeline(args.preset, device, None, torch.float32)
        else:
            pipeline = load_pipeline(args.weights, device=device, **loader)
        summary = run_synth_benchmark(args.data_dir, pipeline, options=options)
    except (OSError, ValueError, RuntimeError) as err:
        raise CLIError(first_line(err)) from err
    write_json(summary, args.out)
    sys.stdout.write(format_table(summary) + "\n")  # the table is the command's output
    logging.getLogger(__name__).info("wrote %s", args.out)
    return 0

