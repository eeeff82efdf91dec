"""``talkinghead download`` and ``talkinghead convert``: official weights -> model directories."""

from __future__ import annotations

import argparse
import logging

from talkinghead.cli.errors import CLIError
from talkinghead.errors import first_line
from talkinghead.families import FAMILIES, resolve

_RESOLUTIONS = {"128": (128,), "256": (256,), "all": (128, 256)}


def add_download(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("download", help="fetch the official DAWN weights and HuBERT from the Hub")
    p.add_argument("--dest", default=None, help="target folder (default: <cache>/official)")
    p.add_argument("--resolution", choices=sorted(_RESOLUTIONS), default="all")
    p.add_argument("--revision", default=None, help="branch, tag or commit of Hanbo-Cheng/DAWN")
    p.add_argument("--no-hubert", action="store_true", help="skip facebook/hubert-large-ls960-ft")
    p.set_defaults(func=run_download)


def run_download(args: argparse.Namespace) -> int:
    from talkinghead.download import download_official

    try:
        dest = download_official(
            args.dest,
            resolution=_RESOLUTIONS[args.resolution],
            revision=args.revision,
            hubert=not args.no_hubert,
        )
    except (OSError, ValueError) as err:
        raise CLIError(first_line(err)) from err
    logging.getLogger(__name__).info(
        "downloaded into %s; next: talkinghead convert official %s <OUT_DIR>", dest, dest
    )
    return 0


def add_convert(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("convert", help="convert official checkpoints to talkinghead's format")
    kinds = p.add_subparsers(dest="source", required=True)
    off = kinds.add_parser(
        "official",
        aliases=["dawn"],
        help="official DAWN files (Hugging Face layout) -> OUT_DIR/dawn-128, OUT_DIR/dawn-256",
    )
    off.add_argument("src_dir", metavar="SRC_DIR", help="folder laid out like Hanbo-Cheng/DAWN")
    off.add_argument("out_dir", metavar="OUT_DIR", help="where the model directories are written")
    off.add_argument("--resolution", choices=sorted(_RESOLUTIONS), default="all")
    off.add_argument("--no-progress", action="store_true", help="no progress bar")
    off.set_defaults(func=run_convert_official)
    for family in FAMILIES.values():
        if family.converter is None or family.name == "dawn":
            continue
        conv = kinds.add_parser(
            family.name, help=f"official {family.name} files -> a model directory OUT_DIR"
        )
        conv.add_argument("src", metavar="SRC", help="the official file or folder")
        conv.add_argument("out_dir", metavar="OUT_DIR", help="the model directory to write")
        conv.set_defaults(func=run_convert_family, family=family.name)


def run_convert_official(args: argparse.Namespace) -> int:
    from talkinghead.dawn.convert import convert_official_dir

    try:
        written = convert_official_dir(
            args.src_dir,
            args.out_dir,
            resolutions=_RESOLUTIONS[args.resolution],
            progress=not args.no_progress,
        )
    except (OSError, ValueError) as err:
        raise CLIError(first_line(err)) from err
    for path in written:
        logging.getLogger(__name__).info("wrote %s", path)
    return 0


def run_convert_family(args: argparse.Namespace) -> int:
    convert = resolve(FAMILIES[args.family].converter)
    try:
        written = convert(args.src, args.out_dir)
    except (OSError, ValueError) as err:
        raise CLIError(first_line(err)) from err
    logging.getLogger(__name__).info("wrote %s", written)
    return 0
