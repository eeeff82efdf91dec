"""Command line: ``talkinghead <command> ...``.

Each subcommand lives in a small ``_add_<command>`` function that declares its flags and the function
that runs it; the work itself is done by the library (cli.py holds no model logic).
"""

from __future__ import annotations

import argparse
import logging
import sys


class CLIError(Exception):
    """A user-facing error: printed as one sentence, exit status 2, no traceback."""


def _add_convert(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("convert", help="convert official checkpoints to talkinghead's format")
    p.set_defaults(func=lambda args: _not_yet("convert"))


def _not_yet(name: str) -> int:
    raise CLIError(f"'{name}' is not available in this build.")


def build_parser() -> argparse.ArgumentParser:
    from . import __version__

    parser = argparse.ArgumentParser(prog="talkinghead", description=__doc__.splitlines()[0])
    parser.add_argument("--version", action="version", version=f"talkinghead {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", required=True)
    for add in (_add_convert,):
        add(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO, format="%(levelname)s: %(message)s"
    )
    try:
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
