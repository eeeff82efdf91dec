"""Diffused Heads sampling speed: ours against the official sampling loop, same weights, noise and steps.

    python benchmarks/diffused_heads_speed.py --official PATH/TO/diffused-heads \\
        --config golden crema --frames 4 --steps 100 --fast-steps 10 --threads 2 \\
        [--clips 4] [--official-order] --out benchmarks/results

``--official`` is a checkout of MStypulkowski/diffused-heads at its ``train`` branch (the only branch
with the UNet's source; its ``models/diffusion.py`` sampler is bit-identical to main's). Nothing of it
is copied here: ``models.unet.UNet`` and ``models.diffusion.Diffusion`` are imported from the checkout
at run time; third-party packages that the imported files name but the sampling path never calls
(``wandb``, ``torchvision``, ``ffmpeg``, ``pytorch_lightning``) get empty stand-ins in this process
when they are not installed. Without ``--official`` only our rows are measured.

Per configuration (``golden``: the reduced width of ../shared/golden/diffusedheads with its weights;
``crema``: the release's width with seeded random weights) one clip of ``--frames`` frames is
sampled at ``--size`` px (attention at the same downsampling factor) from the same identity frame
and audio embeddings: the official ``Diffusion.space(S).sample`` after ``torch.manual_seed(seed)``,
our frame loop with the ancestral sampler drawing in the official order (``OfficialNoise``) through
the fast UNet path (``fast_unet.FastUNet``, our default), and our fewer-step samplers at
``--fast-steps``. ``--official-order`` adds our ancestral row with the UNet in the official op order
(``impl`` "ours-official-order"; bit-identical to the official output before the fast path existed);
``--clips N`` (N > 1) adds our ancestral row for N clips sampled as one batch (clip 0 is the
official's; the others get other identity frames, audio and seeds), its ``sec_per_frame`` per frame
of one clip, i.e. the throughput of a batch job. ``max_abs_diff_vs_official`` is clip 0's; the fast
path regroups float32 arithmetic, so it is not 0 (the official order's is). The network's output convolution is scaled by 0.005 (the
well-conditioned run of the golden MANIFEST, ``SL``): random weights otherwise make the t = 999
step chaotic, and the outputs could not be compared. Speed does not depend on the weights. The
fewer-step rows' difference to the ancestral output says nothing about quality with random weights.

Do not time anything while another job uses the CPU (the JSON records the load average).
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import importlib
import json
import os
import sys
import time
import types
from pathlib import Path
from typing import Any

import torch
from provenance import provenance

HERE = Path(__file__).resolve().parent
DEFAULT_GOLDEN = (
    Path(os.environ.get("TALKINGHEAD_SHARED", HERE.parent.parent / "shared")) / "golden"
)
GOLDEN_FILE = "diffusedheads/dh_unet_reduced.safetensors"
NEEDED = ("models/unet.py", "models/blocks.py", "models/diffusion.py")


def _stand_ins() -> None:
    """Empty modules for what the official files import but sampling never calls (if missing)."""

    class Compose:
        def __init__(self, transforms: list) -> None:
            self.transforms = transforms

        def __call__(self, x: Any) -> Any:
            for t in self.transforms:
                x = t(x)
            return x

    missing = {
        "wandb": {},
        "ffmpeg": {},
        "torchvision": {},
        "torchvision.transforms": {"Compose": Compose, "GaussianBlur": None, "Grayscale": None},
        "pytorch_lightning": {},
        "pytorch_lightning.callbacks": {"ModelCheckpoint": type("ModelCheckpoint", (), {})},
    }
    for name, attrs in missing.items():
        try:
            importlib.import_module(name)
        except ImportError:
            module = types.ModuleType(name)
            module.__dict__.update(attrs)
            sys.modules[name] = module


def import_official(root: Path) -> tuple[type, type]:
    """(UNet, Diffusion) classes of the official train-branch checkout at ``root``."""
    absent = [p for p in NEEDED if not (root / p).is_file()]
    if absent:
        raise SystemExit(f"{root} is not a train-branch checkout of diffused-heads: no {absent}")
    _stand_ins()
    sys.path.insert(0, str(root))
    unet = importlib.import_module("models.unet")
    diffusion = importlib.import_module("models.diffusion")
    diffusion.trange = functools.partial(diffusion.trange, disable=True)  # its per-frame bar
    return unet.UNet, diffusion.Diffusion


def official_kwargs(cfg: Any) -> dict[str, Any]:
    """The official ``UNet(**kwargs)`` for one of our configs."""
    from talkinghead.diffused_heads.official_keys import OFFICIAL_KWARGS, SUPPORTED_CONDITIONING

    kwargs = {theirs: getattr(cfg, ours) for theirs, ours in OFFICIAL_KWARGS.items()}
    kwargs = {k: list(v) if isinstance(v, tuple) else v for k, v in kwargs.items()}
    grayscale = cfg.motion_channels == 1
    return {
        **kwargs,
        **SUPPORTED_CONDITIONING,
        "resblock_updown": True,
        "precision": 32,
        "grayscale_motion": grayscale,
    }


def build_unet(config: str, size: int, seed: int, golden_dir: Path) -> torch.nn.Module:
    """Our UNet of ``config`` at ``size`` px with its benchmark weights (see the module doc)."""
    from talkinghead.diffused_heads.configs import PRESETS
    from talkinghead.diffused_heads.convert import read_unet
    from talkinghead.diffused_heads.unet import DiffusedHeadsUNet

    if config == "golden":
        state, cfg = read_unet(golden_dir / GOLDEN_FILE)
    else:
        state, cfg = None, PRESETS[config].unet
    factor = size / cfg.image_size
    cfg = dataclasses.replace(
        cfg,
        image_size=size,
        attention_resolutions=tuple(int(r * factor) for r in cfg.attention_resolutions),
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        unet = DiffusedHeadsUNet(cfg)
        if state is not None:
            unet.load_state_dict(state)
        g = torch.Generator().manual_seed(seed)
        with torch.no_grad():
            for p in unet.parameters():
                if not p.any():  # zero-initialised layers would make the output constant
                    p.copy_(0.05 * torch.randn(p.shape, generator=g))
            unet.out[2].weight.mul_(0.005)
            unet.out[2].bias.mul_(0.005)
    return unet.eval()


def inputs(
    unet: torch.nn.Module, frames: int, seed: int, clips: int = 1
) -> tuple[torch.Tensor, torch.Tensor]:
    """(identity frames (clips, 3, S, S) in [-1, 1], audio embeddings (clips, F, C)); clip 0 is the
    same for every ``clips``."""
    cfg, x_cond, audio = unet.cfg, [], []
    for clip in range(clips):
        g = torch.Generator().manual_seed(seed + 1 + 1000 * clip)
        x_cond.append(torch.rand(1, 3, cfg.image_size, cfg.image_size, generator=g) * 2 - 1)
        audio.append(torch.tanh(torch.randn(1, frames, cfg.audio_dim, generator=g)))
    return torch.cat(x_cond), torch.cat(audio)


def run_ours(
    unet, x_cond, audio, sampler: str, steps: int, seed: int, official_order: bool = False
) -> torch.Tensor:
    """(clips, F, 3, S, S): clip b drawn from seed + b (clip 0 as the official run)."""
    from talkinghead.diffused_heads.configs import DiffusedHeadsDiffusionConfig
    from talkinghead.diffused_heads.sampling import (
        BatchNoise,
        OfficialNoise,
        frame_sampler,
        generate_frames,
    )

    frames, size = audio.shape[1], unet.cfg.image_size
    draw = frame_sampler(sampler, steps, DiffusedHeadsDiffusionConfig(), device=x_cond.device)
    noises = [OfficialNoise(seed + b, frames, (1, 3, size, size)) for b in range(len(x_cond))]
    noise = noises[0] if len(noises) == 1 else BatchNoise(noises)
    out = generate_frames(unet, x_cond, audio, draw, noise, official_order=official_order)
    return torch.stack(list(out), dim=1)


def official_sampler(classes: tuple[type, type], unet, steps: int):
    """The official ``Diffusion`` over an official UNet holding ``unet``'s weights, respaced."""
    official_unet, diffusion = classes
    net = official_unet(**official_kwargs(unet.cfg))
    net.load_state_dict(unet.state_dict(), strict=True)
    net = net.to(next(unet.parameters()).device).eval()
    model = diffusion(net, 1000, 3, unet.cfg.image_size, 6)
    model.space(steps)
    return model


def run_official(model, x_cond, audio, seed: int) -> torch.Tensor:
    torch.manual_seed(seed)  # sample.py seeds the global RNG; the sampler draws from it
    return model.sample(x_cond, 1, audio_emb=audio, device=x_cond.device)


def timed(device: torch.device, fn, *args) -> tuple[torch.Tensor, float]:
    start = time.perf_counter()
    with torch.no_grad():
        out = fn(*args)
    if device.type == "cuda":
        torch.cuda.synchronize()
    return out, time.perf_counter() - start


def measure(args: argparse.Namespace, config: str, classes) -> list[dict[str, Any]]:
    """Rows of one configuration: official (if given), ours ancestral (fast path; official op order
    and several clips batched when asked), ours fewer-step."""
    device = torch.device(args.device)
    unet = build_unet(config, args.size, args.seed, args.golden_dir).to(device)
    x_all, audio_all = (t.to(device) for t in inputs(unet, args.frames, args.seed, args.clips))
    x_cond, audio = x_all[:1], audio_all[:1]
    # warm-up (kernels, allocator, the fast path's Winograd weights), one- and many-clip shapes
    for b in sorted({1, args.clips}):
        run_ours(unet, x_all[:b], audio_all[:b, :1], "ddim", 2, args.seed)
    rows, official = [], None
    if classes:
        model = official_sampler(classes, unet, args.steps)
        official, seconds = timed(device, run_official, model, x_cond, audio, args.seed)
        rows.append(_row(args, config, "official", "ancestral", args.steps, seconds, None))
    plan = [("ours", "ancestral", args.steps, 1)]
    if args.official_order:
        plan.append(("ours-official-order", "ancestral", args.steps, 1))
    if args.clips > 1:
        plan.append(("ours", "ancestral", args.steps, args.clips))
    plan += [("ours", "ddim", args.fast_steps, 1), ("ours", "dpmpp-2m", args.fast_steps, 1)]
    for impl, sampler, steps, clips in plan:
        out, seconds = timed(
            device,
            run_ours,
            *(unet, x_all[:clips], audio_all[:clips], sampler, steps, args.seed),
            impl == "ours-official-order",
        )
        diff = None if official is None else float((out[:1] - official).abs().max())
        rows.append(_row(args, config, impl, sampler, steps, seconds, diff, clips))
    for row in rows:
        row["speedup"] = rows[0]["sec_per_frame"] / row["sec_per_frame"]
    return rows


def _row(args, config, impl, sampler, steps, seconds, diff, clips=1) -> dict[str, Any]:
    return {
        "config": config,
        "size": args.size,
        "impl": impl,
        "sampler": sampler,
        "steps": steps,
        "frames": args.frames,
        "clips": clips,
        "seconds": seconds,
        "sec_per_frame": seconds / (args.frames * clips),  # per frame of one clip
        "max_abs_diff_vs_official": diff,
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--official", type=Path, default=None, help="train-branch checkout")
    parser.add_argument(
        "--config", nargs="+", default=["golden", "crema"], choices=["golden", "crema"]
    )
    parser.add_argument("--size", type=int, default=128, help="frame side (the release: 128)")
    parser.add_argument("--frames", type=int, default=4)
    parser.add_argument("--steps", type=int, default=100, help="ancestral steps (official default)")
    parser.add_argument("--fast-steps", type=int, default=10, help="steps of ddim / dpmpp-2m")
    parser.add_argument(
        "--clips", type=int, default=1, help="N > 1 adds a row of N clips sampled as one batch"
    )
    parser.add_argument(
        "--official-order",
        action="store_true",
        help="add a row of our ancestral sampling with the UNet in the official op order",
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--device", default="cpu")
    parser.add_argument(
        "--out", type=Path, default=None, help="folder for diffused_heads_speed.json"
    )
    parser.add_argument("--golden-dir", type=Path, default=DEFAULT_GOLDEN)
    args = parser.parse_args(argv)
    if args.official and args.frames < 3:
        parser.error("--frames must be at least 3: the official sampler indexes frames 0-2 first")
    if args.clips < 1:
        parser.error("--clips must be at least 1")
    torch.set_num_threads(args.threads)
    classes = import_official(args.official.resolve()) if args.official else None
    rows = [row for config in args.config for row in measure(args, config, classes)]
    print(
        f"{'config':8} {'impl':19} {'sampler':10} {'steps':>5} {'clips':>5} {'s/frame':>9} "
        f"{'speed-up':>8} {'max|Δ| vs official':>19}"
    )
    for r in rows:
        diff = (
            "" if r["max_abs_diff_vs_official"] is None else f"{r['max_abs_diff_vs_official']:.2e}"
        )
        print(
            f"{r['config']:8} {r['impl']:19} {r['sampler']:10} {r['steps']:>5} {r['clips']:>5} "
            f"{r['sec_per_frame']:>9.3f} {r['speedup']:>7.2f}x {diff:>19}"
        )
    if args.out:
        args.out.mkdir(parents=True, exist_ok=True)
        result = {"results": rows, **provenance(argv, threads=args.threads, device=args.device)}
        path = args.out / "diffused_heads_speed.json"
        path.write_text(json.dumps(result, indent=1))
        print(f"wrote {path}")


if __name__ == "__main__":
    main()
