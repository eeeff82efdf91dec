"""Quality cost of fewer-step sampling: distance of short DPM-Solver++(2M) / DDIM runs from a long DDIM run.

    python benchmarks/sampler_quality.py [--frames 40] [--ref-steps 100] \\
        [--runs dpmpp-2m:10 ddim:10 ddim:20] [--threads 2] [--out /tmp/sampler_quality]

The golden reduced A2V-FDM UNet (``a2v128_reduced.safetensors``, random weights) on the recorded inputs of
MANIFEST call D (``fea``, ``bbox_fea``, ``cond``; F=40, 32×32 latents) and its recorded initial noise
``D.random.0.randn``. Every run starts from that same x_T; DDIM runs use eta 0 (deterministic, the textbook
"correct" update) so that the only difference from the reference is the step count / solver. The reference is
DDIM with ``--ref-steps`` steps. Distances are on the final latent (flow x, flow y, occlusion): max abs, RMS,
and RMS relative to the reference's RMS. Prints a table and writes ``<out>/sampler_quality.json``.

Caveat: the golden weights are random, so the denoiser is not a trained score model; the numbers say how far
the solvers move from a converged trajectory of *this* network, not how a trained model's videos change.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import time
from pathlib import Path

import torch
from safetensors.torch import load_file
from torch import Tensor

from talkinghead.convert.dawn_official import unet_state_dict
from talkinghead.diffusion.samplers import ddim_sample, dpmpp_2m_sample
from talkinghead.diffusion.schedules import cosine_alphas_cumprod, ddim_timesteps
from talkinghead.models import unet3d

logger = logging.getLogger("benchmarks.sampler_quality")
HERE = Path(__file__).resolve().parent
DEFAULT_GOLDEN = (
    Path(os.environ.get("TALKINGHEAD_SHARED", HERE.parent.parent / "shared")) / "golden"
)
SAMPLERS = ("ddim", "dpmpp-2m")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--golden-dir", type=Path, default=DEFAULT_GOLDEN)
    p.add_argument("--frames", type=int, default=40, help="first F of the recorded 40 frames")
    p.add_argument("--ref-steps", type=int, default=100, help="DDIM steps of the reference")
    p.add_argument(
        "--runs", nargs="+", default=["dpmpp-2m:10", "ddim:10", "ddim:20"], help="SAMPLER:STEPS"
    )
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--out", type=Path, default=Path("/tmp/sampler_quality"))
    args = p.parse_args(argv)
    if not 1 <= args.frames <= 40:
        raise SystemExit(f"--frames={args.frames} must be in 1..40 (the recorded clip)")
    for run in args.runs:
        name, _, steps = run.partition(":")
        if name not in SAMPLERS or not steps.isdigit():
            raise SystemExit(
                f"--runs entry {run!r} must be SAMPLER:STEPS with SAMPLER in {SAMPLERS}"
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


@torch.no_grad()
def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    torch.set_num_threads(args.threads)
    sd = unet_state_dict(load_file(str(args.golden_dir / "a2v128_reduced.safetensors")))
    model = unet3d.UNet3D(unet3d.config_from_state_dict(sd)).eval()
    model.load_state_dict(sd, strict=True)
    io = load_file(str(args.golden_dir / "a2v128_reduced_io.safetensors"))
    f = args.frames
    source_emb = model.precompute_source(torch.cat([io["D.input.fea"], io["D.input.bbox_fea"]], 1))
    cond = io["D.input.cond"][:, :f]
    x_T = io["D.random.0.randn"][:, :, :f]
    ab = cosine_alphas_cumprod(dtype=torch.float64)

    def denoise(x: Tensor, t: Tensor) -> Tensor:
        return model(x, t, cond, source_emb=source_emb)

    def sample(name: str, steps: int) -> tuple[Tensor, float]:
        start = time.perf_counter()
        if name == "ddim":
            out = ddim_sample(denoise, x_T, ddim_timesteps(steps), ab, eta=0.0)
        else:
            out = dpmpp_2m_sample(denoise, x_T, ddim_timesteps(steps), ab)
        return out, time.perf_counter() - start

    ref, ref_s = sample("ddim", args.ref_steps)
    logger.info("reference ddim:%d done in %.1f s", args.ref_steps, ref_s)
    rows = []
    for run in args.runs:
        name, _, steps = run.partition(":")
        out, secs = sample(name, int(steps))
        rows.append({"sampler": name, "steps": int(steps), "wall_s": secs, **distances(out, ref)})
        logger.info("%s done in %.1f s", run, secs)

    header = f"| sampler | steps | max abs | RMS | RMS / RMS(ref) | wall s (F={f}) |"
    lines = [header, "|---|---:|---:|---:|---:|---:|"]
    for r in rows:
        lines.append(
            f"| {r['sampler']} | {r['steps']} | {r['max_abs']:.4f} | {r['rms']:.4f} "
            f"| {r['rel_rms']:.4f} | {r['wall_s']:.1f} |"
        )
    print("\n".join(lines))
    args.out.mkdir(parents=True, exist_ok=True)
    result = {
        "frames": f,
        "reference": {"sampler": "ddim", "eta": 0.0, "steps": args.ref_steps, "wall_s": ref_s},
        "runs": rows,
        "threads": args.threads,
        "torch": torch.__version__,
    }
    (args.out / "sampler_quality.json").write_text(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
