"""``talkinghead data synth`` and ``talkinghead prepare``: training sets."""

from __future__ import annotations

import argparse
import logging

from talkinghead.cli.errors import CLIError
from talkinghead.errors import first_line


def add_data(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("data", help="make training data")
    kinds = p.add_subparsers(dest="data_command", required=True)
    syn = kinds.add_parser(
        "synth", help="synthetic talking faces with ground-truth mouth, blink and pose -> OUT_DIR"
    )
    syn.add_argument("out_dir", metavar="OUT_DIR", help="training-set folder (resumable)")
    syn.add_argument("--num-clips", type=int, default=100, help="number of clips")
    syn.add_argument("--seconds", type=float, default=10.0, help="length of each clip")
    syn.add_argument("--resolution", type=int, choices=(64, 128, 256), default=128)
    syn.add_argument("--seed", type=int, default=0, help="every clip follows from (seed, index)")
    syn.add_argument("--workers", type=int, default=1, help="parallel processes")
    syn.add_argument("--test-fraction", type=float, default=0.1, help="held-out share of clips")
    syn.add_argument("--voice", choices=("auto", "espeak", "formant"), default="auto",
                     help="espeak-ng sentences or the built-in formant voice "
                     "(auto: espeak-ng when installed)")
    syn.add_argument("--zoom", type=float, default=1.0,
                     help="camera framing: 1 = the face spans ~40%% of the frame, 1.5 ~60%%")
    syn.add_argument("--identities", type=int, default=None,
                     help="only N people, clip i shows person i mod N (default: one per clip)")
    syn.add_argument("--mouth-scale", type=float, default=1.0,
                     help="mouth width and largest opening times this (the demo set uses 1.4)")
    syn.add_argument("--no-video", action="store_true", help="skip the viewable video.mp4 per clip")
    syn.add_argument("--no-progress", action="store_true", help="no progress bar")
    syn.set_defaults(func=run_data_synth)


def run_data_synth(args: argparse.Namespace) -> int:
    from talkinghead.data.synth.clips import write_synth_dataset

    try:
        manifest = write_synth_dataset(
            args.out_dir, num_clips=args.num_clips, seconds=args.seconds,
            resolution=args.resolution, seed=args.seed, workers=args.workers,
            test_fraction=args.test_fraction, voice=args.voice, zoom=args.zoom,
            identities=args.identities, mouth_scale=args.mouth_scale, video=not args.no_video,
            progress=not args.no_progress,
        )
    except (OSError, ValueError, RuntimeError) as err:
        raise CLIError(first_line(err)) from err
    num_test = len(manifest.split("test"))
    logging.getLogger(__name__).info(
        "wrote %d clips (%d held out) to %s", len(manifest.clips), num_test, args.out_dir
    )
    return 0


def add_prepare(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "prepare", help="real talking-head videos -> training set (25 fps face crops, audio, pose)"
    )
    p.add_argument("inputs", nargs="+", metavar="VIDEO_OR_DIR", help="videos or folders of them")
    p.add_argument("-o", "--out", required=True, metavar="OUT_DIR", help="training-set folder (resumable)")
    p.add_argument("--resolution", type=int, choices=(64, 128, 256), default=256)
    p.add_argument("--face3d", default=None, help="3DDFA_V2 assets folder (pose, eyes, FaceBoxes)")
    p.add_argument("--hubert", default=None, help="local HuBERT folder (default: 80 log-mel bands)")
    p.add_argument("--workers", type=int, default=1, help="parallel processes")
    p.add_argument("--test-fraction", type=float, default=0.1, help="held-out share of clips")
    p.add_argument("--seed", type=int, default=0, help="salt of the held-out split")
    p.add_argument("--no-video", action="store_true", help="skip the viewable video.mp4 per clip")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=run_prepare)


def run_prepare(args: argparse.Namespace) -> int:
    from talkinghead.data.prepare import prepare_dataset

    log = logging.getLogger(__name__)
    if args.face3d is None:
        log.warning("no --face3d: neutral pose and default eyes are stored (plumbing only)")
    try:
        result = prepare_dataset(
            args.inputs, args.out, resolution=args.resolution, face3d_dir=args.face3d,
            hubert_dir=args.hubert, workers=args.workers, test_fraction=args.test_fraction,
            seed=args.seed, video=not args.no_video, progress=not args.no_progress,
        )
    except (OSError, ValueError, RuntimeError) as err:
        raise CLIError(first_line(err)) from err
    log.info(
        "%d clips in %s (%d new, %d held out); %d videos skipped (see skipped.json)",
        len(result.manifest.clips), args.out, len(result.written),
        len(result.manifest.split("test")), len(result.skipped),
    )
    return 0

