"""Quality cost of fewer-step sampling: distance of short DPM-Solver++(2M) / DDIM runs from a long DDIM run.

    python benchmarks/sampler_quality.py [--frames 40] [--ref-steps 100] \\
        [--runs dpmpp-2m:10 ddim:10 ddim:20] [--threads 2] [--out /tmp/sampler_quality]
    python benchmarks/sampler_quality.py --demo | --model DIR [--image P --audio A] [--seconds 4] \\
        [--seed 0] [--ref-steps 100] [--runs dpmpp-2m:5 dpmpp-2m:10 ddim:10 ddim:20] [--threads 2]

Every run starts from the same x_T; DDIM runs use eta 0 (deterministic, the textbook "correct" update) so
that the only difference from the reference, DDIM with ``--ref-steps`` steps, is the step count / solver.
Distances are on the final latent (flow x, flow y, occlusion): max abs, RMS, and RMS relative to the
reference's RMS, with the wall time of each sampler call. Prints a table and writes
``<out>/sampler_quality.json``.

Golden mode (the default): the golden reduced A2V-FDM UNet (``a2v128_reduced.safetensors``, random
weights) on the recorded inputs of MANIFEST call D (``fea``, ``bbox_fea``, ``cond``; first ``--frames``
of F=40, 32×32 latents) and its recorded initial noise ``D.random.0.randn``. The weights are random, so
the numbers say how far the solvers move from a converged trajectory of *this* network, not how a
trained model's videos change.

Model mode (``--demo``: the packaged demo model; ``--model DIR``: any model directory, e.g. a newer
checkpoint of the demo's format): ``DawnPipeline`` on the demo portrait and speech (or
``--image`` / ``--audio``) cut to ``--seconds`` (or ``--frames``). The portrait, audio features and
PBNet motion (seeded by ``--seed``) are computed once and reused; every run calls the pipeline's
``sample_latents`` with a fresh generator of that seed, so x_T is the same draw, and its latents are
decoded by the pipeline's LFG (``decode``). Adds the PSNR (dB, 0..255) of each decoded uint8 video
against the reference's.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch
from provenance import provenance
from safetensors.torch import load_file
from torch import Tensor

from talkinghead.dawn.configs import GenerateOptions
from talkinghead.dawn.convert import unet_state_dict
from talkinghead.dawn.models import unet3d
from talkinghead.dawn.motion import MOTION_DTYPE
from talkinghead.dawn.pipeline import DawnPipeline
from talkinghead.demo import DEMO_DIR, FACE_FILE, PORTRAIT, SPEECH, KnownFace, demo_pipeline
from talkinghead.diffusion.samplers import ddim_sample, dpmpp_2m_sample
from talkinghead.diffusion.schedules import cosine_alphas_cumprod, ddim_timesteps
from talkinghead.eval.metrics import psnr
from talkinghead.media.audio import load_audio, num_video_frames

logger = logging.getLogger("benchmarks.sampler_quality")
HERE = Path(__file__).resolve().parent
DEFAULT_GOLDEN = (
    Path(os.environ.get("TALKINGHEAD_SHARED", HERE.parent.parent / "shared")) / "golden"
)
SAMPLERS = ("ddim", "dpmpp-2m")
GOLDEN_FRAMES = 40  # length of the recorded call D
SAMPLE_RATE = 16_000

# (sampler, steps) -> final latent (1, 3, F, h, w)
SampleFn = Callable[[str, int], Tensor]
# final latent -> (F, S, S, 3) uint8 video
DecodeFn = Callable[[Tensor], np.ndarray]


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    src = p.add_mutually_exclusive_group()
    src.add_argument("--demo", action="store_true", help="model mode with the packaged demo model")
    src.add_argument("--model", type=Path, default=None, help="model mode with this model dir")
    p.add_argument("--golden-dir", type=Path, default=DEFAULT_GOLDEN)
    p.add_argument(
        "--frames",
        type=int,
        default=None,
        help=f"golden: first F of the recorded {GOLDEN_FRAMES} (default all); model: cut the "
        "speech to F frames instead of --seconds",
    )
    p.add_argument("--image", type=Path, default=None, help="model mode: portrait (default: demo)")
    p.add_argument("--audio", type=Path, default=None, help="model mode: speech (default: demo)")
    p.add_argument("--seconds", type=float, default=4.0, help="model mode: cut the speech to this")
    p.add_argument("--seed", type=int, default=0, help="model mode: x_T and PBNet seed")
    p.add_argument("--device", default="cpu", help="model mode: cpu, cuda, cuda:1 ...")
    p.add_argument("--ref-steps", type=int, default=100, help="DDIM steps of the reference")
    p.add_argument(
        "--runs", nargs="+", default=["dpmpp-2m:10", "ddim:10", "ddim:20"], help="SAMPLER:STEPS"
    )
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--out", type=Path, default=Path("/tmp/sampler_quality"))
    args = p.parse_args(argv)
    args.model_mode = args.demo or args.model is not None
    if not args.model_mode:
        args.frames = GOLDEN_FRAMES if args.frames is None else args.frames
        if not 1 <= args.frames <= GOLDEN_FRAMES:
            raise SystemExit(
                f"--frames={args.frames} must be in 1..{GOLDEN_FRAMES} (the recorded clip)"
            )
        if args.image or args.audio:
            raise SystemExit("--image / --audio need --demo or --model (model mode)")
    elif args.frames is not None and args.frames < 1:
        raise SystemExit(f"--frames={args.frames} must be >= 1")
    if args.seconds <= 0:
        raise SystemExit(f"--seconds={args.seconds} must be > 0")
    if args.ref_steps < 1:
        raise SystemExit(f"--ref-steps={args.ref_steps} must be >= 1")
    for run in args.runs:
        name, _, steps = run.partition(":")
        if name not in SAMPLERS or not steps.isdigit() or int(steps) < 1:
            raise SystemExit(
                f"--runs entry {run!r} must be SAMPLER:STEPS with SAMPLER in {SAMPLERS}, STEPS >= 1"
            )
    return args


def distances(x: Tensor, ref: Tensor) -> dict[str, float]:
    """max abs, RMS and RMS / RMS(ref) of x − ref."""
    diff = (x.double() - ref.double()).flatten()
    rms = diff.square().mean().sqrt().item()
    return {
        "max_abs": diff.abs().max().item(),
        "rms": rms,
        "rel_rms": rms / ref.double().square().mean().sqrt().item(),
    }


# -- the two sources of latents -------------------------------------------------------------------


def golden_sampler(golden_dir: Path, frames: int) -> SampleFn:
    """Sampling with the golden reduced UNet on recorded call-D inputs and noise (CPU, float32)."""
    sd = unet_state_dict(load_file(str(golden_dir / "a2v128_reduced.safetensors")))
    model = unet3d.UNet3D(unet3d.config_from_state_dict(sd)).eval()
    model.load_state_dict(sd, strict=True)
    io = load_file(str(golden_dir / "a2v128_reduced_io.safetensors"))
    source_emb = model.precompute_source(torch.cat([io["D.input.fea"], io["D.input.bbox_fea"]], 1))
    cond = io["D.input.cond"][:, :frames]
    x_T = io["D.random.0.randn"][:, :, :frames]
    ab = cosine_alphas_cumprod(dtype=torch.float64)

    def denoise(x: Tensor, t: Tensor) -> Tensor:
        return model(x, t, cond, source_emb=source_emb)

    def sample(name: str, steps: int) -> Tensor:
        if name == "ddim":
            return ddim_sample(denoise, x_T, ddim_timesteps(steps), ab, eta=0.0)
        return dpmpp_2m_sample(denoise, x_T, ddim_timesteps(steps), ab)

    return sample


@dataclass
class ModelBench:
    """Everything of one model-mode clip that does not depend on the sampler."""

    pipe: DawnPipeline
    sample: SampleFn
    decode: DecodeFn
    frames: int


def build_pipeline(args: argparse.Namespace) -> DawnPipeline:
    """The demo pipeline, or ``--model`` loaded; the demo portrait's face is known (no detector)."""
    if args.model is None:
        pipe = demo_pipeline(DEMO_DIR, args.device)
    else:
        pipe = DawnPipeline.from_pretrained(args.model, device=args.device)
    if args.image is None:
        pipe.face_analyzer = KnownFace.from_json(DEMO_DIR / FACE_FILE)  # type: ignore[assignment]
    return pipe


def model_sampler(args: argparse.Namespace) -> ModelBench:
    """Prepare the clip once (portrait, features, PBNet motion) and return its sample / decode."""
    pipe = build_pipeline(args)
    samples = load_audio(args.audio or DEMO_DIR / SPEECH)
    keep = (
        args.frames * SAMPLE_RATE // GenerateOptions.fps
        if args.frames
        else round(args.seconds * SAMPLE_RATE)
    )
    if keep > len(samples):
        raise SystemExit(
            f"the speech has {len(samples) / SAMPLE_RATE:.2f} s, asked for {keep / SAMPLE_RATE:.2f} s"
        )
    samples = samples[:keep]
    # the demo portrait is already framed as the model was trained; a user's photo is cropped
    base = GenerateOptions(seed=args.seed, eta=0.0, crop=args.image is not None)
    portrait = pipe.prepare(args.image or DEMO_DIR / PORTRAIT, base)
    frames = num_video_frames(len(samples), fps=base.fps)
    if frames < 1:
        raise SystemExit(f"{len(samples)} audio samples make no video frame")
    feats = pipe.audio_condition(samples, frames, dtype=MOTION_DTYPE)
    motion = pipe.motion(
        portrait, feats, base, torch.Generator(device=pipe.device).manual_seed(args.seed)
    )
    audio = feats.to(pipe.dtype)

    def sample(name: str, steps: int) -> Tensor:
        options = replace(base, sampler=name, num_steps=steps)
        # a fresh generator per run: x_T is its first draw, so every run starts from the same noise
        generator = torch.Generator(device=pipe.device).manual_seed(args.seed)
        return pipe.sample_latents(portrait, audio, motion, options, generator)

    def decode(latent: Tensor) -> np.ndarray:
        return np.concatenate(list(pipe.decode(portrait, latent, base.decode_batch)))

    return ModelBench(pipe, sample, decode, frames)


# -- measurement and report -----------------------------------------------------------------------


def timed(sample: SampleFn, name: str, steps: int, device: torch.device) -> tuple[Tensor, float]:
    """One sampler call and its wall time (synchronised on CUDA)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    start = time.perf_counter()
    out = sample(name, steps)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return out.float().cpu(), time.perf_counter() - start


def measure(
    sample: SampleFn,
    runs: list[str],
    ref_steps: int,
    decode: DecodeFn | None = None,
    device: torch.device | None = None,
) -> tuple[dict, list[dict]]:
    """The reference and each ``SAMPLER:STEPS`` run; with ``decode``, also each video's PSNR against
    the reference video (None when they are identical)."""
    device = device or torch.device("cpu")
    ref, ref_s = timed(sample, "ddim", ref_steps, device)
    logger.info("reference ddim:%d done in %.1f s", ref_steps, ref_s)
    reference = {"sampler": "ddim", "eta": 0.0, "steps": ref_steps, "wall_s": ref_s}
    ref_video = None if decode is None else torch.from_numpy(decode(ref))
    rows = []
    for run in runs:
        name, _, steps = run.partition(":")
        out, secs = timed(sample, name, int(steps), device)
        row = {"sampler": name, "steps": int(steps), "wall_s": secs, **distances(out, ref)}
        if decode is not None:
            assert ref_video is not None
            db = psnr(torch.from_numpy(decode(out)), ref_video)
            row["video_psnr_db"] = None if db == float("inf") else db
        rows.append(row)
        logger.info("%s done in %.1f s", run, secs)
    return reference, rows


def table(rows: list[dict], frames: int) -> str:
    """Markdown table; a PSNR column when the rows have one."""
    video = any("video_psnr_db" in r for r in rows)
    header = "| sampler | steps | max abs | RMS | RMS / RMS(ref) |"
    header += " video PSNR dB |" if video else ""
    lines = [
        header + f" wall s (F={frames}) |",
        "|---|---:|---:|---:|---:|" + "---:|" * (1 + video),
    ]
    for r in rows:
        line = (
            f"| {r['sampler']} | {r['steps']} | {r['max_abs']:.4f} | {r['rms']:.4f} "
            f"| {r['rel_rms']:.4f} |"
        )
        if video:
            db = r["video_psnr_db"]
            line += " inf |" if db is None else f" {db:.2f} |"
        lines.append(line + f" {r['wall_s']:.1f} |")
    return "\n".join(lines)


@torch.no_grad()
def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    torch.set_num_threads(args.threads)
    device = torch.device("cpu")
    decode: DecodeFn | None = None
    if args.model_mode:
        bench = model_sampler(args)
        sample, decode, frames, device = bench.sample, bench.decode, bench.frames, bench.pipe.device
        source: dict = {
            "model": str(args.model or "demo"),
            "image": str(args.image or "demo"),
            "audio": str(args.audio or "demo"),
            "seed": args.seed,
            "device": str(device),
        }
    else:
        sample, frames = golden_sampler(args.golden_dir, args.frames), args.frames
        source = {"model": "golden a2v128_reduced"}
    reference, rows = measure(sample, args.runs, args.ref_steps, decode, device)

    print(table(rows, frames))
    args.out.mkdir(parents=True, exist_ok=True)
    result = {
        **source,
        "frames": frames,
        "reference": reference,
        "runs": rows,
        **provenance(argv, threads=args.threads, device=args.device),
    }
    (args.out / "sampler_quality.json").write_text(json.dumps(result, indent=1))


if __name__ == "__main__":
    os.environ.setdefault("TQDM_DISABLE", "1")
    main()
