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


def _add_generate(sub: argparse._SubParsersAction) -> None:
    from .configs import GenerateOptions as G

    p = sub.add_parser("generate", help="portrait + speech -> talking-head mp4")
    p.add_argument("--image", required=True, help="portrait (jpg/png/webp)")
    p.add_argument("--audio", required=True, help="speech (wav/mp3/flac/m4a/ogg or a video)")
    p.add_argument("-o", "--output", required=True, help="output .mp4 (H.264 + AAC, 25 fps)")
    p.add_argument("--weights", default=None,
                   help="model folder: converted or official layout (default: $TALKINGHEAD_HOME)")
    p.add_argument("--preset", default=None, choices=["tiny"],
                   help="random weights of a preset (plumbing checks only: the video shows noise)")
    p.add_argument("--hubert", default=None, help="HuBERT folder (default: next to the weights)")
    p.add_argument("--face3d", default=None, help="3DDFA_V2 assets folder (default: next to the weights)")
    p.add_argument("--resolution", type=int, default=None, help="128 or 256 (default: what --weights holds)")
    p.add_argument("--steps", type=int, default=G.num_steps, help="sampler steps")
    p.add_argument("--sampler", default=G.sampler, choices=["ddim", "dpmpp-2m"],
                   help="ddim (official) or dpmpp-2m (DPM-Solver++: ~10 steps, deterministic)")
    p.add_argument("--eta", type=float, default=G.eta, help="DDIM eta (1 = official)")
    p.add_argument("--guidance", type=float, default=G.guidance_scale, help="classifier-free guidance")
    p.add_argument("--seed", type=int, default=G.seed, help="seed (default: random, printed)")
    p.add_argument("--window", type=int, default=G.window, help="temporal attention half-width")
    p.add_argument("--motion-scale", type=float, default=G.motion_scale, help="head-motion amount")
    p.add_argument("--still", action="store_true", help="no head motion (blinks and lips only)")
    p.add_argument("--no-blink", action="store_true", help="keep the eyes as in the portrait")
    p.add_argument("--pose", default=None, help="(F, 6) .npy head pose to follow instead of PBNet's")
    p.add_argument("--blink", default=None, help="(F, 2) .npy eye openness to follow")
    p.add_argument("--driving-video", default=None, help="take pose and blinks from this video")
    p.add_argument("--no-crop", action="store_true", help="use the image as it is (no face crop)")
    p.add_argument("--crop-margin", type=float, default=G.crop_margin, help="face crop scale")
    p.add_argument("--paste-back", action="store_true", help="animate the crop inside the original")
    p.add_argument("--save-frames", default=None, metavar="DIR", help="also write PNG frames")
    p.add_argument("--save-motion", action="store_true", help="also write OUTPUT.pose/.blink.npy")
    p.add_argument("--faithful", action="store_true", help="replicate the official code's bugs")
    p.add_argument("--decode-batch", type=int, default=G.decode_batch, help="frames per LFG batch")
    p.add_argument("--compile", action="store_true", default=G.compile,
                   help="torch.compile the UNet (pays off on long clips; first call compiles)")
    p.add_argument("--device", default=None, help="cpu, cuda, cuda:1 ... (default: cuda if present)")
    p.add_argument("--dtype", default="float32", choices=["float32", "bfloat16", "float16"],
                   help="UNet and LFG precision; PBNet (pose/blink) always runs in float32 and "
                   "--seed gives the same noise in every dtype")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bars")
    p.set_defaults(func=_run_generate)


def _run_generate(args: argparse.Namespace) -> int:
    from pathlib import Path

    import torch

    from .configs import GenerateOptions
    from .data.audio import load_audio
    from .data.image import load_portrait
    from .outputs import save_motion, save_result

    output = Path(args.output)
    if not output.parent.is_dir():
        raise CLIError(f"the output folder {output.parent} does not exist.")
    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    options = GenerateOptions(
        num_steps=args.steps, eta=args.eta, guidance_scale=args.guidance, window=args.window,
        seed=args.seed, motion_scale=0.0 if args.still else args.motion_scale,
        blink=not args.no_blink, crop=not args.no_crop, crop_margin=args.crop_margin,
        paste_back=args.paste_back, decode_batch=args.decode_batch, faithful=args.faithful,
        sampler=args.sampler, compile=args.compile,
    )
    try:
        # bad inputs are reported before the (slow) weights are loaded
        load_portrait(args.image)
        samples = load_audio(args.audio)
        pipeline = _load_pipeline(args, device, getattr(torch, args.dtype))
        result = pipeline(
            image=args.image, audio=samples, options=options, pose=args.pose,
            blink=args.blink, driving_video=args.driving_video, progress=not args.quiet,
        )
        count = save_result(result, output, audio_path=args.audio, frames_dir=args.save_frames)
        if args.save_motion:
            save_motion(result, output.with_suffix(""))
    except (OSError, ValueError, RuntimeError) as err:
        logging.getLogger(__name__).debug("generate failed", exc_info=True)  # shown with -v
        raise CLIError(_first_line(err)) from err
    logging.getLogger(__name__).info(
        "wrote %s (%d frames, %.2f s, seed %d)", output, count, count / result.fps, result.seed
    )
    return 0


def _load_pipeline(args: argparse.Namespace, device: str, dtype: object):
    from .pipelines.talking_head import TalkingHeadPipeline

    if args.quiet:
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()  # HuBERT's weight-loading bar
    if args.preset is not None:
        return _random_pipeline(args.preset, device, args.face3d, dtype)
    from .pipelines.weights import default_weights

    weights = args.weights or default_weights()
    return TalkingHeadPipeline.from_pretrained(
        weights, device=device, dtype=dtype, hubert_path=args.hubert, face3d_dir=args.face3d,
        resolution=args.resolution,
    )


def _random_pipeline(preset: str, device: str, face3d: str | None, dtype: object):
    from .configs import PRESETS
    from .data.face import FaceAnalyzer
    from .pipelines.talking_head import TalkingHeadPipeline
    from .pipelines.weights import random_modules

    logging.getLogger(__name__).warning(
        "--preset %s uses random weights: the plumbing runs, the video shows noise", preset
    )
    cfg = PRESETS[preset]
    return TalkingHeadPipeline(
        random_modules(cfg, device=device, dtype=dtype), audio_encoder=None, config=cfg,
        face_analyzer=FaceAnalyzer(face3d, device=device), audio_features="logmel",
    )


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


def _add_data(sub: argparse._SubParsersAction) -> None:
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
    syn.add_argument("--no-video", action="store_true", help="skip the viewable video.mp4 per clip")
    syn.add_argument("--no-progress", action="store_true", help="no progress bar")
    syn.set_defaults(func=_run_data_synth)


def _run_data_synth(args: argparse.Namespace) -> int:
    from .data.synth import write_synth_dataset

    try:
        manifest = write_synth_dataset(
            args.out_dir, num_clips=args.num_clips, seconds=args.seconds,
            resolution=args.resolution, seed=args.seed, workers=args.workers,
            test_fraction=args.test_fraction, voice=args.voice, zoom=args.zoom,
            video=not args.no_video,
            progress=not args.no_progress,
        )
    except (OSError, ValueError, RuntimeError) as err:
        raise CLIError(_first_line(err)) from err
    num_test = len(manifest.split("test"))
    logging.getLogger(__name__).info(
        "wrote %d clips (%d held out) to %s", len(manifest.clips), num_test, args.out_dir
    )
    return 0


def _add_prepare(sub: argparse._SubParsersAction) -> None:
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
    p.set_defaults(func=_run_prepare)


def _run_prepare(args: argparse.Namespace) -> int:
    from .data.prepare import prepare_dataset

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
        raise CLIError(_first_line(err)) from err
    log.info(
        "%d clips in %s (%d new, %d held out); %d videos skipped (see skipped.json)",
        len(result.manifest.clips), args.out, len(result.written),
        len(result.manifest.split("test")), len(result.skipped),
    )
    return 0


def _add_eval_synth(sub: argparse._SubParsersAction) -> None:
    from .eval.synth_benchmark import SynthBenchOptions as S

    # a separate command: `eval` takes GENERATED_DIR as its first positional
    p = sub.add_parser(
        "eval-synth", help="synthetic benchmark: mouth correlation, blink rate, LFG PSNR -> JSON"
    )
    p.add_argument("data_dir", metavar="DATA_DIR", help="set made by `talkinghead data synth`")
    p.add_argument("--weights", default=None, help="model folder (e.g. from train --export)")
    p.add_argument("--preset", default=None, choices=["tiny"], help="random weights (plumbing only)")
    p.add_argument("--hubert", default=None, help="HuBERT folder for HuBERT-conditioned models")
    p.add_argument("--out", default="synth_eval.json", help="JSON summary path")
    p.add_argument("--steps", type=int, default=S.num_steps, help="DDIM steps")
    p.add_argument("--seed", type=int, default=S.seed, help="generation seed of the first clip")
    p.add_argument("--max-clips", type=int, default=S.max_clips, help="first N held-out clips")
    p.add_argument("--pbnet", action="store_true", help="also generate with PBNet pose/blinks")
    p.add_argument("--device", default=None, help="cpu, cuda ... (default: cuda if present)")
    p.set_defaults(func=_run_eval_synth, quiet=True, face3d=None, dtype="float32")


def _run_eval_synth(args: argparse.Namespace) -> int:
    import torch

    from .eval.synth_benchmark import (
        SynthBenchOptions,
        format_table,
        run_synth_benchmark,
        write_json,
    )

    if args.weights is None and args.preset is None:
        raise CLIError("pass --weights MODEL_DIR (or --preset tiny for a plumbing check).")
    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    options = SynthBenchOptions(
        num_steps=args.steps, seed=args.seed, max_clips=args.max_clips, pbnet=args.pbnet
    )
    args.resolution = None
    try:
        pipeline = _load_pipeline(args, device, torch.float32)
        summary = run_synth_benchmark(args.data_dir, pipeline, options=options)
    except (OSError, ValueError, RuntimeError) as err:
        raise CLIError(_first_line(err)) from err
    write_json(summary, args.out)
    sys.stdout.write(format_table(summary) + "\n")  # the table is the command's output
    logging.getLogger(__name__).info("wrote %s", args.out)
    return 0


def _add_train(sub: argparse._SubParsersAction) -> None:
    from .train.config import TrainConfig

    d = TrainConfig  # flag defaults come from the dataclass (None = the stage's official value)
    p = sub.add_parser("train", help="train a stage: lfg | pbnet | a2v (single process or torchrun)")
    p.add_argument("stage", choices=("lfg", "pbnet", "a2v"), help="which network to train")
    p.add_argument("--data", help="training-set folder (talkinghead data synth / prepare)")
    p.add_argument("--out", required=True, help="run dir: checkpoint.pt, log.jsonl, samples/")
    p.add_argument("--preset", default=d.preset, help="architecture preset (tiny, dawn-128, ...)")
    p.add_argument("--steps", type=int, default=d.steps, help="optimiser steps in total")
    p.add_argument("--batch-size", type=int, default=d.batch_size, help="per process")
    p.add_argument("--grad-accum", type=int, default=d.grad_accum, help="micro-batches per step")
    p.add_argument("--lr", type=float, default=d.lr, help="peak learning rate")
    p.add_argument("--precision", choices=("fp32", "bf16"), default=d.precision)
    p.add_argument("--seed", type=int, default=d.seed)
    p.add_argument("--device", default=d.device, help="default: cuda:LOCAL_RANK if available")
    p.add_argument("--workers", type=int, default=d.num_workers, help="DataLoader workers")
    p.add_argument("--num-repeats", type=int, default=d.num_repeats, help="clip repeats per pass")
    p.add_argument("--clip-frames", type=int, default=d.clip_frames, help="frames per item")
    p.add_argument("--log-every", type=int, default=d.log_every)
    p.add_argument("--ckpt-every", type=int, default=d.ckpt_every)
    p.add_argument("--sample-every", type=int, default=d.sample_every, help="0 = no previews")
    p.add_argument("--init-from", default=d.init_from, help="start from this run's EMA weights")
    p.add_argument("--vgg-weights", default=d.vgg_weights,
                   help="lfg: torchvision vgg19 state dict -> perceptual loss")
    p.add_argument("--lfg-mouth-weight", type=float, default=d.lfg_mouth_weight,
                   help="lfg: weight of an L1 term inside the mouth box (not official; default 0)")
    p.add_argument("--lfg-separation-weight", type=float, default=d.lfg_separation_weight,
                   help="lfg: weight of a term pushing region centres apart, against regions "
                        "that all cover the whole face (not official; default 0)")
    p.add_argument("--lfg-mouth-region-weight", type=float, default=d.lfg_mouth_region_weight,
                   help="lfg: weight of a term that makes region 0 follow the mouth box of "
                        "synthetic data (not official; default 0)")
    p.add_argument("--net", choices=("pose", "blink"), default=d.net, help="pbnet: which net")
    p.add_argument("--lfg", default=d.lfg, help="a2v: trained LFG (run dir or model dir)")
    p.add_argument("--curriculum", type=int, choices=(1, 2), default=d.curriculum,
                   help="a2v: 1 = fixed clips, first frame as reference; 2 = random both")
    p.add_argument("--resume", action="store_true", help="continue the run in --out")
    p.add_argument("--export", metavar="MODEL_DIR", default=None,
                   help="write the EMA weights into this model dir afterwards (with --steps 0: only)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=_run_train)


def _run_train(args: argparse.Namespace) -> int:
    from .train import TrainConfig, export_run, run_stage

    try:
        if args.steps > 0:
            if args.data is None:
                raise ValueError("--data is required to train")
            cfg = TrainConfig(
                stage=args.stage, data=args.data, run_dir=args.out, preset=args.preset,
                steps=args.steps, batch_size=args.batch_size, grad_accum=args.grad_accum,
                lr=args.lr, precision=args.precision, seed=args.seed, device=args.device,
                num_workers=args.workers, num_repeats=args.num_repeats,
                clip_frames=args.clip_frames, log_every=args.log_every,
                ckpt_every=args.ckpt_every, sample_every=args.sample_every,
                init_from=args.init_from, vgg_weights=args.vgg_weights,
                lfg_mouth_weight=args.lfg_mouth_weight,
                lfg_separation_weight=args.lfg_separation_weight,
                lfg_mouth_region_weight=args.lfg_mouth_region_weight, net=args.net,
                lfg=args.lfg, curriculum=args.curriculum, progress=not args.no_progress,
            )
            result = run_stage(cfg, resume=args.resume)
            logging.getLogger(__name__).info("%s: step %d in %s", args.stage, result.step, args.out)
        if args.export:
            for path in export_run(args.out, args.export):
                logging.getLogger(__name__).info("wrote %s", path)
    except (OSError, ValueError) as err:
        raise CLIError(_first_line(err)) from err
    return 0


def _add_demo(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("demo", help="packaged synthetic portrait + speech -> mp4 (no downloads)")
    p.add_argument("-o", "--output", default="demo.mp4", help="output .mp4 (default demo.mp4)")
    p.add_argument("--seed", type=int, default=0, help="sampling seed")
    p.add_argument("--steps", type=int, default=20, help="sampler steps")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bars")
    p.set_defaults(func=_run_demo)


def _run_demo(args: argparse.Namespace) -> int:
    from .demo import render_demo

    try:
        render_demo(args.output, seed=args.seed, steps=args.steps, progress=not args.quiet)
    except (OSError, ValueError, RuntimeError) as err:
        logging.getLogger(__name__).debug("demo failed", exc_info=True)
        raise CLIError(_first_line(err)) from err
    return 0


def _not_yet(name: str) -> int:
    raise CLIError(f"'{name}' is not available in this build.")


def build_parser() -> argparse.ArgumentParser:
    from . import __version__
    from .serve.commands import add_batch, add_serve

    parser = argparse.ArgumentParser(prog="talkinghead", description=__doc__.splitlines()[0])
    parser.add_argument("--version", action="version", version=f"talkinghead {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", required=True)
    for add in (_add_generate, _add_convert, _add_download, _add_eval, _add_eval_synth, _add_data,
                _add_prepare, _add_train, _add_demo, add_serve, add_batch):
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
