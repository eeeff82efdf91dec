"""The UNet's rotary call, the official real form against the complex form (issue #15).

    python benchmarks/rotary.py [--threads 1 2] [--repeats 30] [--out benchmarks/results/rotary]

The call is the demo UNet's first-level temporal attention's: q and k of a fused projection,
``qkv[:, :, :2]`` of a (256 pixels, 125 frames, 3, 4 heads, 16) tensor, rotated by (125, 1, 1, 16)
angles (``apply_rotary``; ``complex_form=True`` is what the UNet takes). Median of ``--repeats``
calls after three warm-up calls, freed memory kept for reuse as under the CLI. Prints a table and
writes ``<out>/rotary.json``.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import passive_wait  # noqa: F401  (before torch: the CLI's wait policy)
import torch
from provenance import provenance

from talkinghead.allocator import reuse_freed_memory
from talkinghead.dawn.models.rotary import RotaryEmbedding, apply_rotary

HERE = Path(__file__).resolve().parent
PIXELS, FRAMES, HEADS, DIM_HEAD = 256, 125, 4, 16


def median_ms(fn, repeats: int) -> float:
    for _ in range(3):
        fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return 1e3 * statistics.median(times)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--threads", nargs="+", type=int, default=[1, 2])
    p.add_argument("--repeats", type=int, default=30)
    p.add_argument("--out", type=Path, default=HERE / "results" / "rotary")
    args = p.parse_args()
    reuse_freed_memory()
    qkv = torch.randn(
        PIXELS, FRAMES, 3, HEADS, DIM_HEAD, generator=torch.Generator().manual_seed(0)
    )
    cos, sin = RotaryEmbedding(DIM_HEAD).cos_sin(FRAMES)
    cos, sin = cos[:, None, None], sin[:, None, None]
    rows = []
    for threads in args.threads:
        torch.set_num_threads(threads)
        real = median_ms(lambda: apply_rotary(qkv[:, :, :2], cos, sin), args.repeats)
        fast = median_ms(
            lambda: apply_rotary(qkv[:, :, :2], cos, sin, complex_form=True), args.repeats
        )
        rows.append(
            {"threads": threads, "real_ms": real, "complex_ms": fast, "speedup": real / fast}
        )
    print("| threads | real form ms | complex form ms | speed-up |\n|---:|---:|---:|---:|")
    for r in rows:
        print(
            f"| {r['threads']} | {r['real_ms']:.2f} | {r['complex_ms']:.2f} | {r['speedup']:.2f}× |"
        )
    args.out.mkdir(parents=True, exist_ok=True)
    report = {"rows": rows, **provenance(None, threads=max(args.threads), device="cpu")}
    (args.out / "rotary.json").write_text(json.dumps(report, indent=2) + "\n")


if __name__ == "__main__":
    main()
