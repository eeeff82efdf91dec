"""``talkinghead train STAGE``: any family's training stage through the shared loop.

Flags come from ``TrainConfig``'s fields (help = the field's comment); ``None`` defaults take the
stage's official value. Stages come from the family registry.
"""

from __future__ import annotations

import argparse
import logging

from talkinghead.cli.errors import CLIError
from talkinghead.cli.flags import add_dataclass_flags, add_process_flags, options_from_args
from talkinghead.errors import first_line

logger = logging.getLogger(__name__)
ALIASES = {"run_dir": ("--out",), "num_workers": ("--workers",)}


def add_train(sub: argparse._SubParsersAction) -> None:
    from talkinghead.families import training_stages
    from talkinghead.train.config import TrainConfig

    stages = training_stages()
    p = sub.add_parser(
        "train",
        help=f"train a stage ({' | '.join(stages)}) on one process or under torchrun",
        description="Train one network of a model family on a prepared data set (`talkinghead "
        "data synth` / `prepare`). Writes RUN_DIR/checkpoint.pt, log.jsonl, samples/; --resume "
        "continues exactly; --export writes the EMA weights into a model directory.",
    )
    p.add_argument("stage", choices=stages, help="which network to train")
    add_dataclass_flags(p, [TrainConfig], skip=("stage",), aliases=ALIASES)
    p.add_argument("--resume", action="store_true", help="continue the run in --out")
    p.add_argument("--export", metavar="MODEL_DIR", default=None,
                   help="write the EMA weights into this model dir afterwards (with --steps 0: only)")
    p.add_argument("--half", action="store_true",
                   help="store the exported weights in float16: half the bytes, loaded as float32")
    add_process_flags(p, reuse_memory=False)
    p.set_defaults(func=run_train)


def run_train(args: argparse.Namespace) -> int:
    from talkinghead.checkpoints import store_half
    from talkinghead.train import TrainConfig, export_run, run_stage

    if args.run_dir is None:
        raise CLIError("pass the run folder with --out RUN_DIR.")
    try:
        if args.steps is None or args.steps > 0:
            if args.data is None:
                raise ValueError("--data DATA_DIR is required to train")
            cfg = options_from_args(TrainConfig, args, stage=args.stage)
            result = run_stage(cfg, resume=args.resume)
            logger.info("%s: step %d in %s", args.stage, result.step, args.run_dir)
        if args.export:
            for path in export_run(args.run_dir, args.export):
                if args.half:
                    store_half(path)
                logger.info("wrote %s%s", path, " (float16)" if args.half else "")
    except (OSError, ValueError) as err:
        raise CLIError(first_line(err)) from err
    return 0
