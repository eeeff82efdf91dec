"""``talkinghead generate`` (any family), ``talkinghead demo`` and ``talkinghead models``.

``generate`` flags for the runtime knobs come from the registered families' options dataclasses
(``cli.flags``); the model named by ``--model`` picks the family, and a knob that family does not
have is refused with a sentence.
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import sys
from pathlib import Path
from typing import Any

from talkinghead.cli.errors import CLIError
from talkinghead.cli.flags import (
    add_dataclass_flags,
    add_process_flags,
    given_flags,
    options_from_args,
)
from talkinghead.errors import first_line
from talkinghead.families import FAMILIES, resolve

logger = logging.getLogger(__name__)

# flag names kept from before the flags were generated
ALIASES = {"num_steps": ("--steps",), "guidance_scale": ("--guidance",)}
DTYPES = ("float32", "bfloat16", "float16")
# keyword arguments of a family's from_pretrained / __call__, passed only when given
LOADER_FLAGS = {"hubert": "hubert_path", "face3d": "face3d_dir", "resolution": "resolution"}
CALL_FLAGS = {"pose": "pose", "blink_track": "blink", "driving_video": "driving_video"}


def _options_classes() -> list[type]:
    return [resolve(f.options) for f in FAMILIES.values()]


def _stream_classes() -> list[type]:
    return [resolve(f.stream_options) for f in FAMILIES.values() if f.stream_options]


def add_generate(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "generate",
        help="portrait (or video) + speech -> talking-head mp4, with any registered model",
        description="Animate a portrait (or re-voice a person's video) with speech. Writes an H.264 "
        "+ AAC mp4 at 25 fps with the original audio, atomically (no partial file on failure).",
    )
    io = p.add_argument_group("inputs and output")
    io.add_argument("--image", help="portrait (jpg/png/webp)")
    io.add_argument("--video", help="a person's video, for families that re-voice a video")
    io.add_argument("--audio", required=True, help="speech (wav/mp3/flac/m4a/ogg or a video)")
    io.add_argument("-o", "--output", required=True, help="output .mp4 (H.264 + AAC, 25 fps)")
    io.add_argument("--save-frames", default=None, metavar="DIR", help="also write PNG frames")
    io.add_argument("--save-motion", action="store_true",
                    help="also write OUTPUT.pose.npy / .blink.npy (DAWN)")
    io.add_argument("--stream", action="store_true",
                    help="DAWN: generate by overlapping windows at flat memory into a fragmented "
                    "mp4 playable while it grows (a hidden file beside OUTPUT, renamed when done)")
    model = p.add_argument_group("model")
    model.add_argument("--model", "--weights", dest="model", default=None, metavar="NAME_OR_DIR",
                       help="a model name (`talkinghead models`) or folder: converted, or the "
                       "official DAWN layout (default: the official DAWN in the cache)")
    model.add_argument("--preset", default=None, choices=["tiny"],
                       help="random DAWN weights of a preset (plumbing checks only: the video shows noise)")
    model.add_argument("--hubert", default=None, help="HuBERT folder (default: next to the weights)")
    model.add_argument("--face3d", default=None,
                       help="3DDFA_V2 assets folder (default: next to the weights)")
    model.add_argument("--resolution", type=int, default=None,
                       help="DAWN: 128 or 256 (default: what --model holds)")
    model.add_argument("--device", default=None, help="cpu, cuda, cuda:1 ... (default: cuda if present)")
    model.add_argument("--dtype", default="float32", choices=DTYPES,
                       help="network precision (DAWN keeps PBNet in float32; --seed gives the same "
                       "noise in every dtype)")
    motion = p.add_argument_group("DAWN motion drivers")
    motion.add_argument("--still", action="store_true", help="no head motion (blinks and lips only)")
    motion.add_argument("--pose", default=None, help="(F, 6) .npy head pose to follow instead of PBNet's")
    motion.add_argument("--blink", dest="blink_track", default=None,
                        help="(F, 2) .npy eye openness to follow")
    motion.add_argument("--driving-video", default=None, help="take pose and blinks from this video")
    knobs = p.add_argument_group("generation options (defaults: the model family's)")
    add_dataclass_flags(knobs, _options_classes(), aliases=ALIASES)
    windows = p.add_argument_group("streaming windows (with --stream; measured defaults in "
                                   "benchmarks/RESULTS.md)")
    add_dataclass_flags(windows, _stream_classes())
    add_process_flags(p, reuse_memory=True)
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bars")
    p.set_defaults(func=run_generate)


def run_generate(args: argparse.Namespace) -> int:
    import torch

    from talkinghead.media.audio import load_audio
    from talkinghead.outputs import save_motion, save_result
    from talkinghead.pipelines.base import ProgressBars

    output = Path(args.output)
    if not output.parent.is_dir():
        raise CLIError(f"the output folder {output.parent} does not exist.")
    _windowing(args)  # a window flag without --stream is refused before anything loads
    source = _source(args)
    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    try:
        samples = load_audio(args.audio)  # bad inputs are reported before the (slow) weights load
        pipeline = _pipeline(args, device, getattr(torch, args.dtype))
        options = _options(pipeline.options_class, args)
        extras = {kw: getattr(args, flag) for flag, kw in CALL_FLAGS.items() if getattr(args, flag)}
        if args.stream:
            return _run_stream(args, pipeline, source, samples, options, extras, output)
        result = pipeline(source, samples, options,
                          callback=None if args.quiet else ProgressBars(), **extras)
        count = save_result(result, output, audio_path=args.audio, frames_dir=args.save_frames)
        if args.save_motion:
            save_motion(result, output.with_suffix(""))
    except (OSError, ValueError, RuntimeError, TypeError) as err:
        logger.debug("generate failed", exc_info=True)  # shown with -v
        raise CLIError(first_line(err)) from err
    logger.info("wrote %s (%d frames, %.2f s, seed %d)", output, count, count / result.fps, result.seed)
    return 0


def _run_stream(args, pipeline, source, samples, options, extras, output) -> int:
    from talkinghead.outputs import save_stream
    from talkinghead.pipelines.base import ProgressBars

    if not hasattr(pipeline, "stream") or extras or args.save_frames or args.save_motion:
        raise CLIError("--stream works with DAWN models and no drivers, --save-frames or "
                       "--save-motion; drop those or --stream.")
    frames = pipeline.stream(source, samples, options, **_windowing(args),
                             callback=None if args.quiet else ProgressBars())
    count = save_stream(frames, output, fps=options.fps, audio_path=args.audio)
    logger.info("wrote %s (%d frames, %.2f s)", output, count, count / options.fps)
    return 0


def _windowing(args: argparse.Namespace) -> dict[str, int]:
    """The streaming-window flags given (checked: only with --stream)."""
    fields = [f.name for cls in _stream_classes() for f in dataclasses.fields(cls)]
    given = {f: getattr(args, f) for f in fields if getattr(args, f, None) is not None}
    if given and not args.stream:
        flags = ", ".join(given_flags(args, given))
        raise CLIError(f"{flags} applies only to --stream; add --stream or drop it.")
    return given


def _source(args: argparse.Namespace) -> str:
    if bool(args.image) == bool(args.video):
        raise CLIError("pass the portrait with --image, or a person's video with --video (one of them).")
    if args.image:
        from talkinghead.media.image import load_portrait

        try:
            load_portrait(args.image)  # decoded now so a bad file fails before the weights load
        except (OSError, ValueError) as err:
            raise CLIError(first_line(err)) from err
    elif not Path(args.video).is_file():
        raise CLIError(f"the video {args.video} does not exist.")
    return args.image or args.video


def _options(options_class: type, args: argparse.Namespace) -> Any:
    own = {f.name for f in dataclasses.fields(options_class)}
    others = {f.name for cls in _options_classes() for f in dataclasses.fields(cls)} - own
    foreign = given_flags(args, sorted(others))
    if foreign:
        raise CLIError(f"{', '.join(foreign)} does not apply to this model's family; drop it.")
    overrides = {"motion_scale": 0.0} if args.still else {}
    return options_from_args(options_class, args, **overrides)


def _pipeline(args: argparse.Namespace, device: str, dtype: Any) -> Any:
    from talkinghead.registry import load_pipeline

    if args.quiet:
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()  # HuBERT's weight-loading bar
    if args.preset is not None:
        return random_pipeline(args.preset, device, args.face3d, dtype)
    if args.model is None:
        from talkinghead.dawn.weights import default_weights

        args.model = default_weights()
    loader = {kw: getattr(args, flag) for flag, kw in LOADER_FLAGS.items() if getattr(args, flag)}
    return load_pipeline(args.model, device=device, dtype=dtype, **loader)


def random_pipeline(preset: str, device: str, face3d: str | None, dtype: Any) -> Any:
    """A DAWN pipeline with random weights of a preset (plumbing checks)."""
    from talkinghead.dawn.configs import PRESETS
    from talkinghead.dawn.pipeline import DawnPipeline
    from talkinghead.dawn.weights import random_modules
    from talkinghead.face.analysis import FaceAnalyzer

    logger.warning("--preset %s uses random weights: the plumbing runs, the video shows noise", preset)
    cfg = PRESETS[preset]
    return DawnPipeline(
        random_modules(cfg, device=device, dtype=dtype), audio_encoder=None, config=cfg,
        face_analyzer=FaceAnalyzer(face3d, device=device), audio_features="logmel",
    )


def add_demo(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("demo", help="packaged synthetic portrait + speech -> mp4 (no downloads)",
                       description="Render the packaged demo portrait speaking the packaged clip "
                       "with the packaged 64-px DAWN, or --model diffused-heads-demo (CPU, no "
                       "downloads).")
    p.add_argument("-o", "--output", default="demo.mp4", help="output .mp4 (default demo.mp4)")
    p.add_argument("--model", default="demo",
                   help="a packaged model: demo (DAWN, default) or diffused-heads-demo")
    p.add_argument("--seed", type=int, default=0, help="sampling seed")
    p.add_argument("--steps", type=int, default=20, help="sampler steps")
    add_process_flags(p, reuse_memory=True)
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bars")
    p.set_defaults(func=run_demo)


def run_demo(args: argparse.Namespace) -> int:
    from talkinghead.demo import render_demo

    try:
        render_demo(args.output, model=args.model, seed=args.seed, steps=args.steps,
                    progress=not args.quiet)
    except (OSError, ValueError, RuntimeError) as err:
        logger.debug("demo failed", exc_info=True)
        raise CLIError(first_line(err)) from err
    return 0


def add_models(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("models", help="list the models `--model NAME` and load_pipeline() know",
                       description="Prints one line per named model: name, family, where it comes "
                       "from, description.")
    p.set_defaults(func=run_models)


def run_models(args: argparse.Namespace) -> int:
    from talkinghead.registry import MODELS, available_models

    models = available_models()
    width = max(map(len, models))
    for name, description in models.items():
        where = "packaged" if MODELS[name].packaged else "download"
        sys.stdout.write(f"{name:<{width}} {MODELS[name].family:<15} {where:<9} {description}\n")
    return 0
