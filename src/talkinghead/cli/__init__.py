"""Command line: ``talkinghead <command> ...``.

Each command lives in a module of this package with an ``add_<command>`` function that declares its
flags (runtime knobs come from the dataclasses, ``cli.flags``) and the function that runs it; the
work itself is done by the library (the CLI holds no model logic). Errors a user can act on are
``CLIError``: printed as one sentence, exit status 2.
"""

from __future__ import annotations

import argparse
import logging
import sys

from talkinghead.cli.errors import CLIError


def build_parser() -> argparse.ArgumentParser:
    from talkinghead import __version__
    from talkinghead.cli import data, evaluate, generate, train, weights
    from talkinghead.serve.commands import add_batch, add_serve

    parser = argparse.ArgumentParser(
        prog="talkinghead", description="Portrait + speech -> talking-head video."
    )
    parser.add_argument("--version", action="version", version=f"talkinghead {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", required=True)
    for add in (
        generate.add_generate, generate.add_demo, generate.add_models, weights.add_download,
        weights.add_convert, evaluate.add_eval, evaluate.add_eval_synth, data.add_data,
        data.add_prepare, train.add_train, add_serve, add_batch,
    ):
        add(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    from talkinghead.cli.flags import apply_process_flags
    from talkinghead.threads import set_wait_policy

    set_wait_policy()  # before anything imports torch (building the parser does)
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO, format="%(levelname)s: %(message)s"
    )
    try:
        apply_process_flags(args)
        code = args.func(args) or 0
    except CLIError as err:
        print(f"talkinghead: error: {err}", file=sys.stderr)
        code = 2
    except KeyboardInterrupt:
        print("talkinghead: interrupted", file=sys.stderr)
        code = 130
    if argv is None:
        sys.exit(code)
    return code
