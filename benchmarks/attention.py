"""Peak memory and time of ONE temporal attention layer vs frames: local (banded) vs full (O(F^2)).

    python benchmarks/attention.py --frames 200 3200 [--dim 64 --size 8] [--out benchmarks/results]

The layer is the UNet's level-0 temporal attention (dawn_spec.md §4): ``Residual(PreNorm(
TemporalAttention(dim, 8 heads x 32)))`` over ``size x size`` pixel sequences of F frames, with the
shared rotary angles and relative-bias table built by ``UNet3D.temporal_context``. Each (mode, F)
runs in a fresh subprocess; memory is the peak RSS during the call above the RSS before it (input
and output tensors included), or peak CUDA allocation. ``full`` is our faithful mode: dense logits
with the -1e8 band mask, chunked over pixels only (``TemporalContext.max_logits``), so its logits per
chunk still grow with F^2. The goal for ``local``: memory(3200) <= 1.2 * 16 * memory(200).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import subprocess
import sys
from pathlib import Path

import torch
from provenance import provenance

HERE = Path(__file__).resolve().parent
logger = logging.getLogger("benchmarks.attention")


def worker(
    mode: str, frames: int, dim: int, size: int, threads: int, device: str
) -> dict[str, object]:
    from workloads import measure

    from talkinghead.dawn.configs import UNet3DConfig
    from talkinghead.dawn.models.unet3d import UNet3D

    torch.set_num_threads(threads)
    dev = torch.device(device)
    torch.manual_seed(0)
    unet = UNet3D(UNet3DConfig(dim=dim, dim_mults=(1,))).to(dev).eval()
    layer = unet.init_temporal_attn  # Residual(PreNorm(TemporalAttention)) at level-0 width
    x = torch.randn(1, dim, frames, size, size, device=dev)
    with torch.no_grad():
        ctx = unet.temporal_context(frames, window=unet.cfg.window, mode=mode, dtype=x.dtype)
        stats = measure(lambda: layer(x, ctx=ctx), dev)
    return {
        "mode": mode,
        "frames": frames,
        "dim": dim,
        "size": size,
        "threads": threads,
        "device": device,
        **stats,
    }


def main(argv: list[str] | None = None) -> None:
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--frames", nargs="+", type=int, default=[200, 3200])
    p.add_argument("--modes", nargs="+", default=["local", "full"], choices=["local", "full"])
    p.add_argument("--dim", type=int, default=64, help="channels (official level 0: 64)")
    p.add_argument("--size", type=int, default=8, help="pixels per side (official: 32 at 128 px)")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--threads", type=int, default=torch.get_num_threads())
    p.add_argument("--out", type=Path, default=HERE / "results")
    p.add_argument("--worker", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.worker:
        sys.stdout.write("RESULT " + json.dumps(worker(**json.loads(args.worker))) + "\n")
        return
    rows = []
    for mode in args.modes:
        for frames in args.frames:
            job = {
                "mode": mode,
                "frames": frames,
                "dim": args.dim,
                "size": args.size,
                "threads": args.threads,
                "device": args.device,
            }
            proc = subprocess.run(
                [sys.executable, __file__, "--worker", json.dumps(job)],
                check=False,
                capture_output=True,
                text=True,
                env={**os.environ, "PYTHONPATH": str(HERE)},
            )
            lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")]
            row = (
                json.loads(lines[0][7:]) if lines else {**job, "error": proc.stderr.strip()[-300:]}
            )
            rows.append(row)
            logger.info("%s", json.dumps(row))
    key = "cuda_call_peak_mib" if args.device == "cuda" else "call_peak_rss_mib"
    by = {(r["mode"], r["frames"]): r for r in rows if "error" not in r}
    summary = []
    lo, hi = min(args.frames), max(args.frames)
    for mode in args.modes:
        if (mode, lo) in by and (mode, hi) in by:
            ratio = by[(mode, hi)][key] / by[(mode, lo)][key]
            summary.append(
                f"{mode}: memory F={hi} / F={lo} = {ratio:.2f} (linear would be {hi / lo:.0f}, "
                f"goal <= {1.2 * hi / lo:.1f}); time ratio "
                f"{by[(mode, hi)]['wall_s'] / by[(mode, lo)]['wall_s']:.2f}"
            )
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "attention.json").write_text(
        json.dumps(
            {
                **provenance(argv, threads=args.threads, device=args.device),
                "rows": rows,
                "summary": summary,
            },
            indent=2,
        )
    )
    table = ["| mode | frames | wall s | peak MiB during call |", "|---|---:|---:|---:|"]
    table += [
        f"| {r['mode']} | {r['frames']} | {r.get('wall_s', float('nan')):.3f} | "
        f"{r.get(key, float('nan')):.1f} |"
        for r in rows
    ]
    sys.stdout.write("\n".join(table + summary) + "\n")


if __name__ == "__main__":
    main()
