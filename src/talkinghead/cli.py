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


_RESOLUTIONS = {"128": (128,), "256": (256,), "all": (128, 256)}


def _add_convert(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("convert", help="convert official checkpoints to talkinghead's format")
    kinds = p.add_subparsers(dest="source", required=True)
    off = kinds.add_parser(
        "official",
        help="official DAWN files (Hugging Face layout) -> OUT_DIR/dawn-128, OUT_DIR/dawn-256",
    )
    off.add_argument("src_dir", metavar="SRC_DIR", help="folder laid out like Hanbo-Cheng/DAWN")
    off.add_argument("out_dir", metavar="OUT_DIR", help="where the model directories are written")
    off.add_argument("--resolution", choices=sorted(_RESOLUTIONS), default="all")
    off.add_argument("--no-progress", action="store_true", help="no progress bar")
    off.set_defaults(func=_run_convert_official)


def _run_convert_official(args: argparse.Namespace) -> int:
    from .convert.dawn_official import convert_official_dir

    try:
        written = convert_official_dir(
            args.src_dir,
            args.out_dir,
            resolutions=_RESOLUTIONS[args.resolution],
            progress=not args.no_progress,
        )
    except (OSError, ValueError) as err:
        raise CLIError(_first_line(err)) from err
    for path in written:
        logging.getLogger(__name__).info("wrote %s", path)
    return 0


def _first_line(err: BaseException) -> str:
    # library errors are one sentence already; HTTP errors from huggingface_hub carry extra lines
    text = str(err).strip()
    return text.splitlines()[0] if text else type(err).__name__


def _add_download(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("download", help="fetch the official DAWN weights and HuBERT from the Hub")
    p.add_argument("--dest", default=None, help="target folder (default: <cache>/official)")
    p.add_argument("--resolution", choices=sorted(_RESOLUTIONS), default="all")
    p.add_argument("--revision", default=None, help="branch, tag or commit of Hanbo-Cheng/DAWN")
    p.add_argument("--no-hubert", action="store_true", help="skip facebook/hubert-large-ls960-ft")
    p.set_defaults(func=_run_download)


def _run_download(args: argparse.Namespace) -> int:
    from .hub import download_official

    try:
        dest = download_official(
            args.dest,
            resolution=_RESOLUTIONS[args.resolution],
            revision=args.revision,
            hubert=not args.no_hubert,
        )
    except (OSError, ValueError) as err:
        raise CLIError(_first_line(err)) from err
    logging.getLogger(__name__).info(
        "downloaded into %s; next: talkinghead convert official %s <OUT_DIR>", dest, dest
    )
    return 0


def _add_eval(sub: argparse._SubParsersAction) -> None:
    from .eval.evaluate import EvalOptions
    from .eval.networks import WEIGHTS_ENV

    p = sub.add_parser("eval", help="DAWN Table 1 metrics of a folder of videos -> JSON + HTML report")
    p.add_argument("generated_dir", metavar="GENERATED_DIR", help="folder of generated videos")
    p.add_argument("--reference", default=None, metavar="REAL_DIR", help="real videos, paired by file stem")
    p.add_argument("--out", default="eval_report", help="report folder (metrics.json, report.html, cache/)")
    p.add_argument("--weights-dir", default=None, help=f"metric network weights (default: ${WEIGHTS_ENV})")
    p.add_argument("--device", default=None, help="torch device (default: cuda if available)")
    p.add_argument("--batch-size", type=int, default=EvalOptions.batch_size)
    p.add_argument("--fid-max-frames", type=int, default=EvalOptions.fid_max_frames,
                   help="frames per video used for FID (default: all)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=_run_eval)


def _run_eval(args: argparse.Namespace) -> int:
    from pathlib import Path

    import torch

    from .eval.evaluate import EvalOptions, evaluate_directory, write_json
    from .eval.report import write_report

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
        raise CLIError(_first_line(err)) from err
    write_json(result.summary, out / "metrics.json")
    write_report(result, out / "report.html")
    log = logging.getLogger(__name__)
    for path in result.summary["skipped"]:
        log.warning("skipped unreadable video %s", path["path"])
    log.info("wrote %s and %s", out / "metrics.json", out / "report.html")
    return 0


def _not_yet(name: str) -> int:
    raise CLIError(f"'{name}' is not available in this build.")


def build_parser() -> argparse.ArgumentParser:
    from . import __version__

    parser = argparse.ArgumentParser(prog="talkinghead", description=__doc__.splitlines()[0])
    parser.add_argument("--version", action="version", version=f"talkinghead {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", required=True)
    for add in (_add_convert, _add_download, _add_eval):
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
