"""Reduced-precision deviation: the same clip in float32 and in bfloat16 / float16, compared.

    python benchmarks/precision.py [--model DIR | --preset reduced-golden] [--seconds 3 | --frames F] \\
        [--steps 10] [--precisions bfloat16 float16] [--modes cast autocast] [--threads 1] \\
        [--fixed-motion] [--cast-pbnet] [--out /tmp/precision]

One model (the packaged demo model by default, any converted model directory with ``--model``, or
``--preset reduced-golden``: the golden reduced UNet / LFG / PBNet of ``../shared/golden``, random
weights of the official layout, with seeded random 1024-d features standing in for HuBERT) renders
one clip (the demo portrait and speech by default, cut to ``--seconds`` or ``--frames``) through
``DawnPipeline`` once in float32 and once per lower precision and mode:

* ``cast``: the networks and the sampler state in that dtype, what ``talkinghead generate --dtype``
  does (``DawnPipeline.to(device, dtype)``);
* ``autocast``: float32 weights and sampler state, the whole call under ``torch.autocast``
  (matmuls and convolutions in the lower precision, reductions and the DDIM update in float32).

In both modes the pipeline runs PBNet in float32 (issue #5); ``--cast-pbnet`` casts PBNet to the
lower precision too, as before that fix, to measure what keeping it float32 buys. Every run has the
same seed and the same random draws: the pipeline draws its noise (PBNet latents, x_T, DDIM noise)
in float32 and casts it. Reported per run: the final latent (flow x, flow y, occlusion) max abs /
mean abs deviation from float32, PSNR (dB, 0..255) of the decoded uint8 video against the float32
video, and the wall time of the sampler call (``sample_latents``). Default precisions: bfloat16 on CPU; bfloat16 and float16 on CUDA. Prints a
table and writes ``<out>/precision.json``.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import time
from collections.abc import Callable
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from provenance import provenance
from safetensors.torch import load_file
from torch import Tensor

from talkinghead.dawn.configs import FaceLocConfig, GenerateOptions
from talkinghead.dawn.convert import pbnet_state_dict, unet_state_dict
from talkinghead.dawn.models import flow_autoencoder, pose_blink_cvae, unet3d
from talkinghead.dawn.models.face_location import FaceLocationEncoder
from talkinghead.dawn.modules import DawnModules
from talkinghead.dawn.motion import MOTION_NETS, Motion
from talkinghead.dawn.pipeline import DawnPipeline
from talkinghead.demo import DEMO_DIR, FACE_FILE, PORTRAIT, SPEECH, KnownFace, demo_pipeline
from talkinghead.eval.metrics import psnr
from talkinghead.face.analysis import FaceAnalyzer
from talkinghead.media.audio import load_audio

logger = logging.getLogger("benchmarks.precision")
HERE = Path(__file__).resolve().parent
DEFAULT_GOLDEN = (
    Path(os.environ.get("TALKINGHEAD_SHARED", HERE.parent.parent / "shared")) / "golden"
)
REDUCED = "reduced-golden"
PRECISIONS = ("bfloat16", "float16")
MODES = ("cast", "autocast")
SAMPLES_PER_FRAME = 16_000 // GenerateOptions.fps


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    src = p.add_mutually_exclusive_group()
    src.add_argument("--model", type=Path, default=None, help="model dir (default: the demo model)")
    src.add_argument("--preset", choices=[REDUCED], default=None, help="golden reduced weights")
    p.add_argument("--golden-dir", type=Path, default=DEFAULT_GOLDEN)
    p.add_argument("--image", type=Path, default=None, help="portrait (default: the demo's)")
    p.add_argument("--audio", type=Path, default=None, help="speech (default: the demo's)")
    p.add_argument("--seconds", type=float, default=3.0, help="cut the speech to this length")
    p.add_argument("--frames", type=int, default=None, help="cut the speech to F frames instead")
    p.add_argument("--steps", type=int, default=10, help="sampler steps")
    p.add_argument("--sampler", default=GenerateOptions.sampler, choices=["ddim", "dpmpp-2m"])
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="cpu", help="cpu, cuda, cuda:1 ...")
    p.add_argument(
        "--precisions",
        nargs="+",
        choices=PRECISIONS,
        default=None,
        help="default: bfloat16 on CPU, bfloat16 and float16 on CUDA",
    )
    p.add_argument("--modes", nargs="+", choices=MODES, default=list(MODES))
    p.add_argument(
        "--fixed-motion",
        action="store_true",
        help="every run follows the float32 PBNet pose / eyes (isolates A2V-FDM + LFG)",
    )
    p.add_argument(
        "--cast-pbnet",
        action="store_true",
        help="cast PBNet to the lower precision too (the pipeline keeps it float32)",
    )
    p.add_argument("--threads", type=int, default=1, help="torch intra-op threads")
    p.add_argument("--out", type=Path, default=Path("/tmp/precision"))
    args = p.parse_args(argv)
    if args.frames is not None and args.frames < 1:
        raise SystemExit(f"--frames={args.frames} must be >= 1")
    if args.seconds <= 0:
        raise SystemExit(f"--seconds={args.seconds} must be > 0")
    if args.steps < 1:
        raise SystemExit(f"--steps={args.steps} must be >= 1")
    if args.precisions is None:
        cuda = torch.device(args.device).type == "cuda"
        args.precisions = list(PRECISIONS) if cuda else ["bfloat16"]
    return args


# -- the model ------------------------------------------------------------------------------------


class SeededAudioFeatures:
    """Stands in for ``HubertFeatureExtractor`` with random-weight models: (F, dim) seeded noise,
    identical for every call, so all precisions see the same condition."""

    def __init__(self, dim: int, seed: int) -> None:
        self.dim, self.seed, self.device = dim, seed, torch.device("cpu")

    def to(self, device: torch.device | str | None = None, dtype: torch.dtype | None = None):
        self.device = torch.device(device) if device is not None else self.device
        return self

    def __call__(self, audio_16k: np.ndarray, num_frames: int) -> Tensor:
        g = torch.Generator().manual_seed(self.seed)
        return torch.randn(num_frames, self.dim, generator=g).to(self.device)


def golden_modules(golden_dir: Path, device: torch.device) -> DawnModules:
    """The golden reduced networks (MANIFEST §1-3) as one 128-px model."""

    def build(module: torch.nn.Module, sd: dict[str, Tensor]) -> torch.nn.Module:
        module.load_state_dict(sd, strict=True)
        return module.to(device)

    unet_sd = unet_state_dict(load_file(str(golden_dir / "a2v128_reduced.safetensors")))
    lfg_sd = load_file(str(golden_dir / "lfg128_reduced.safetensors"))
    nets = {}
    for name in ("pose", "blink"):
        sd = load_file(str(golden_dir / f"pbnet_{name}.safetensors"))
        cfg = pose_blink_cvae.config_from_state_dict(sd)
        nets[name] = build(pose_blink_cvae.PoseBlinkCVAE(cfg), pbnet_state_dict(sd))
    ucfg = unet3d.config_from_state_dict(unet_sd)
    return DawnModules(
        resolution=128,
        flow_ae=build(
            flow_autoencoder.FlowAutoencoder(flow_autoencoder.config_from_state_dict(lfg_sd)),
            lfg_sd,
        ),
        pose=nets["pose"],
        blink=nets["blink"],
        unet=build(unet3d.UNet3D(ucfg), unet_sd),
        face_loc=build(
            FaceLocationEncoder(FaceLocConfig(out_channels=ucfg.face_loc_channels)),
            load_file(str(golden_dir / "a2v128_face_loc_emb.safetensors")),
        ),
    )


def pipeline_factory(args: argparse.Namespace) -> Callable[[], DawnPipeline]:
    """A function that builds a fresh float32 pipeline (casting back up would keep the rounding)."""
    device = torch.device(args.device)
    known_face = args.image is None  # the demo portrait's face is known: no detector needed

    def build() -> DawnPipeline:
        if args.preset == REDUCED:
            modules = golden_modules(args.golden_dir, device)
            audio_dim = modules.unet.cfg.audio_dim
            pipe = DawnPipeline(
                modules,
                audio_encoder=SeededAudioFeatures(audio_dim, args.seed),  # type: ignore[arg-type]
                face_analyzer=FaceAnalyzer(None, device=device),
            )
        elif args.model is None:
            pipe = demo_pipeline(DEMO_DIR, str(device))
        else:
            pipe = DawnPipeline.from_pretrained(args.model, device=device)
        if known_face:
            pipe.face_analyzer = KnownFace.from_json(DEMO_DIR / FACE_FILE)  # type: ignore[assignment]
        return pipe

    return build


# -- one run --------------------------------------------------------------------------------------


@dataclass
class Rendered:
    """What one call produced."""

    latent: Tensor  # (1, 3, F, h, w) float32: flow x, flow y, occlusion
    video: np.ndarray  # (F, S, S, 3) uint8
    motion: Motion  # PBNet pose / eyes
    sampling_s: float  # wall time of ``sample_latents``


def render(
    pipe: DawnPipeline,
    image: Path,
    audio: np.ndarray,
    options: GenerateOptions,
    autocast: torch.dtype | None,
    motion: Motion | None = None,
) -> Rendered:
    """One pipeline call, with its sampler call timed and its final latent kept; ``motion``: follow
    these pose / eye tracks instead of generating them with PBNet."""
    caught: dict[str, object] = {}
    sample = pipe.sample_latents

    def timed(*a, **k) -> Tensor:  # type: ignore[no-untyped-def]
        sync(pipe.device)
        start = time.perf_counter()
        out = sample(*a, **k)
        sync(pipe.device)
        caught["wall_s"], caught["latent"] = time.perf_counter() - start, out
        return out

    pipe.sample_latents = timed  # type: ignore[method-assign]
    amp = (
        torch.autocast(pipe.device.type, dtype=autocast) if autocast is not None else nullcontext()
    )
    # frames are produced lazily: decoding happens while they are consumed, inside the contexts
    with amp:
        drivers = {} if motion is None else {"pose": motion.pose, "blink": motion.eye}
        result = pipe(image, audio, options=options, **drivers)
        assert result.frames is not None
        video = np.concatenate(list(result.frames))
    latent = caught["latent"]
    assert isinstance(latent, Tensor)
    return Rendered(latent.float().cpu(), video, result.motion, float(caught["wall_s"]))  # type: ignore[arg-type]


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def deviation(run: Rendered, ref: Rendered) -> dict[str, float | None]:
    """Distances of one run from the float32 reference (PSNR None when the videos are equal)."""
    diff = (run.latent.double() - ref.latent.double()).abs()
    video, ref_video = torch.from_numpy(run.video).double(), torch.from_numpy(ref.video).double()
    db = psnr(video, ref_video)
    return {
        "latent_max_abs": diff.max().item(),
        "latent_mean_abs": diff.mean().item(),
        "latent_ref_mean_abs": ref.latent.double().abs().mean().item(),
        "video_psnr_db": None if db == float("inf") else db,
        "video_max_abs": (video - ref_video).abs().max().item(),
        "pose_max_abs": float(np.abs(run.motion.pose - ref.motion.pose).max()),
        "eye_max_abs": float(np.abs(run.motion.eye - ref.motion.eye).max()),
    }


# -- report ---------------------------------------------------------------------------------------


def table(rows: list[dict], frames: int, steps: int) -> str:
    lines = [
        (
            f"| precision | mode | latent max abs | latent mean abs | video PSNR dB | video max abs "
            f"| pose max abs | eye max abs | sampling s (F={frames}, {steps} steps) |"
        ),
        "|---|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        if "error" in r:
            lines.append(f"| {r['precision']} | {r['mode']} | error: {r['error']} |" + " |" * 6)
            continue
        dev = r.get("latent_max_abs")
        db = r.get("video_psnr_db")
        cells = (
            ["—", "—", "(reference)", "—", "—", "—"]
            if dev is None
            else [
                f"{dev:.4f}",
                f"{r['latent_mean_abs']:.5f}",
                "inf" if db is None else f"{db:.2f}",
                f"{r['video_max_abs']:.0f}",
                f"{r['pose_max_abs']:.4f}",
                f"{r['eye_max_abs']:.4f}",
            ]
        )
        lines.append(
            f"| {r['precision']} | {r['mode']} | "
            + " | ".join(cells)
            + f" | {r['sampling_s']:.2f} |"
        )
    return "\n".join(lines)


@torch.no_grad()
def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    torch.set_num_threads(args.threads)
    build = pipeline_factory(args)
    image = args.image or DEMO_DIR / PORTRAIT
    samples = load_audio(args.audio or DEMO_DIR / SPEECH)
    keep = args.frames * SAMPLES_PER_FRAME if args.frames else round(args.seconds * 16_000)
    if keep > len(samples):
        raise SystemExit(
            f"the speech has {len(samples) / 16_000:.2f} s, asked for {keep / 16_000:.2f} s"
        )
    samples = samples[:keep]
    options = GenerateOptions(
        num_steps=args.steps, seed=args.seed, crop=False, sampler=args.sampler
    )

    ref = render(build(), image, samples, options, None)
    fixed = ref.motion if args.fixed_motion else None
    if fixed is not None:
        # the reference takes the driver path too, so only the precision differs
        ref = render(build(), image, samples, options, None, fixed)
    frames = ref.latent.shape[2]
    logger.info("float32 reference: %d frames, sampling %.2f s", frames, ref.sampling_s)
    rows: list[dict] = [{"precision": "float32", "mode": "-", "sampling_s": ref.sampling_s}]
    for name in args.precisions:
        dtype = getattr(torch, name)
        for mode in args.modes:
            row: dict = {"precision": name, "mode": mode}
            try:
                pipe = build()
                if mode == "cast":
                    pipe.to(args.device, dtype)
                if args.cast_pbnet:
                    for net in MOTION_NETS:
                        getattr(pipe.modules, net).to(dtype)
                amp = dtype if mode == "autocast" else None
                run = render(pipe, image, samples, options, amp, fixed)
            except (RuntimeError, ValueError, NotImplementedError) as err:
                row["error"] = str(err).splitlines()[0][:200]
                logger.warning("%s %s failed: %s", name, mode, row["error"])
            else:
                row.update(sampling_s=run.sampling_s, **deviation(run, ref))
                logger.info(
                    "%s %s: sampling %.2f s, PSNR %s dB",
                    name,
                    mode,
                    run.sampling_s,
                    row["video_psnr_db"],
                )
            rows.append(row)

    print(table(rows, frames, args.steps))
    args.out.mkdir(parents=True, exist_ok=True)
    report = {
        "model": REDUCED if args.preset else str(args.model or "demo"),
        "frames": frames,
        "steps": args.steps,
        "sampler": args.sampler,
        "fixed_motion": args.fixed_motion,
        "cast_pbnet": args.cast_pbnet,
        "seed": args.seed,
        "rows": rows,
        **provenance(argv, threads=args.threads, device=args.device),
    }
    (args.out / "precision.json").write_text(json.dumps(report, indent=1))


if __name__ == "__main__":
    os.environ.setdefault("TQDM_DISABLE", "1")
    main()
