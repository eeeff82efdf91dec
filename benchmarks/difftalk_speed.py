"""DiffTalk frames per second: masked DDIM + VQ decoding of a batch of frames (random weights).

    python benchmarks/difftalk_speed.py --preset difftalk --steps 200 50 20 --batch 4 [--out benchmarks/results]

Times ``DiffTalkPipeline._generate`` on one synthetic 256-px video already prepared (face analysis
and encoding, the reference latent included, are per video, not per frame, and are left out): per
batch the context encoders, ``steps`` UNet calls on (batch, 9, 64, 64) and the VQ decoder, after
one warm-up pass at 1 step. Each row counts the VQ encodings during generation
(``encoder_calls``, 0 when the reference latent is cached). The weights are random; speed does not
depend on them. Do not run it while another job uses the CPU (numbers would mean nothing). At the
official widths one UNet call costs about 7 CPU-seconds per frame, so ``--frames 2 --batch 2``
keeps the three step counts near half an hour on 2 cores.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import passive_wait  # noqa: F401  (before torch: idle threads sleep)
import torch
from provenance import provenance

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "tests"))


def prepared_pipeline(preset: str, batch: int, frames: int, device: str):
    """A random-weight pipeline of ``preset`` and a synthetic video prepared once (faces, crops,
    latents and the reference latent: the per-video work, outside the timing)."""
    from difftalk.conftest import FakeFaceBackend, face_video

    from talkinghead.difftalk.conditioning import ConditionEncoder
    from talkinghead.difftalk.configs import PRESETS, DiffTalkOptions
    from talkinghead.difftalk.model_dir import DiffTalkModules
    from talkinghead.difftalk.networks import build_denoiser, build_first_stage
    from talkinghead.difftalk.pipeline import DiffTalkPipeline

    cfg = PRESETS[preset]
    modules = DiffTalkModules(
        cfg,
        build_first_stage(cfg.first_stage),
        build_denoiser(cfg.denoiser),
        ConditionEncoder(cfg.condition),
    )
    for net in modules.networks().values():
        net.to(device)
    size = cfg.image_size
    pipe = DiffTalkPipeline(modules, face_backend=FakeFaceBackend(size / 2, size / 2.2, size / 4))
    prepared = pipe.prepare(face_video(frames, size, size), DiffTalkOptions(batch_size=batch))
    return pipe, prepared


def measure(pipe, prepared, steps: int, batch: int, device: str) -> dict[str, float]:
    """Seconds and frames per second of generating every prepared frame with ``steps`` DDIM steps;
    ``encoder_calls`` counts VQ encodings during generation (0: the reference latent is cached)."""
    from talkinghead.difftalk.pipeline import DiffTalkOptions

    frames = prepared.num_frames
    windows = torch.zeros(frames, 8, 16, pipe.config.condition.audio_channels)
    order = np.arange(frames)
    options = DiffTalkOptions(num_steps=steps, batch_size=batch)
    first_stage = pipe.modules.first_stage
    calls = []
    encode = first_stage.encode
    first_stage.encode = lambda *a, **k: calls.append(1) or encode(*a, **k)
    try:
        start = time.perf_counter()
        for _ in pipe._generate(
            prepared, windows, order, steps, options, torch.Generator().manual_seed(0), None
        ):
            pass
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        seconds = time.perf_counter() - start
    finally:
        del first_stage.encode  # back to the class's method
    return {
        "steps": steps,
        "batch": batch,
        "frames": frames,
        "seconds": seconds,
        "fps": frames / seconds,
        "encoder_calls": len(calls),
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="difftalk")
    parser.add_argument("--steps", type=int, nargs="+", default=[200, 50, 20])
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--frames", type=int, default=8)
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    rows = []
    with torch.no_grad():
        pipe, prepared = prepared_pipeline(args.preset, args.batch, args.frames, args.device)
        measure(pipe, prepared, 1, args.batch, args.device)  # warm-up: first calls allocate
        for steps in args.steps:
            rows.append(measure(pipe, prepared, steps, args.batch, args.device))
            print(json.dumps(rows[-1]))
    if args.out is not None:
        args.out.mkdir(parents=True, exist_ok=True)
        result = {
            "preset": args.preset,
            "rows": rows,
            **provenance(argv, threads=args.threads, device=args.device),
        }
        (args.out / f"difftalk_speed_{args.preset}_{args.device}.json").write_text(
            json.dumps(result, indent=2)
        )


if __name__ == "__main__":
    main()
