"""Benchmark generation speed and peak memory against clip length: ours vs faithful vs official.

    python benchmarks/generate.py --presets reduced-golden --frames 50 200 800 3200 --steps 3 \\
        [--official /path/to/DAWN-pytorch] [--stages ddim decode e2e] [--out benchmarks/results]

Every (implementation, preset, stage, frames) runs in a FRESH subprocess (``workloads.py``) so its peak
RSS is its own; results are printed as a table, written to ``<out>/generate.json`` and plotted
(time and memory against frames) to ``<out>/generate.png``. With ``--official`` the official code is
imported from that checkout in its worker (``official.py``); at ``--check-frames`` the stage outputs of
ours and official (same weights, inputs and injected noise) are compared (max abs / max rel error).

Costs being measured (dawn_spec.md §4, §6): the official O(F^2) temporal attention, the frame-invariant
272 source channels repeated over frames and convolved every step, and per-frame LFG decoding with
the source re-encoded per frame; ours: banded attention, the source convolution cached per video,
batched decoding with the portrait encoded once, streamed.

Matplotlib is needed only for the plot (benchmark-only; ``pip install matplotlib``).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import subprocess
import sys
import time
from dataclasses import asdict
from pathlib import Path

import torch
from provenance import provenance
from safetensors.torch import load_file
from workloads import IMPLS, PRESET_NAMES, STAGES, Spec

from talkinghead.allocator import malloc_env
from talkinghead.threads import thread_env

logger = logging.getLogger("benchmarks.generate")
HERE = Path(__file__).resolve().parent
DEFAULT_GOLDEN = (
    Path(os.environ.get("TALKINGHEAD_SHARED", HERE.parent.parent / "shared")) / "golden"
)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--presets", nargs="+", default=["reduced-golden"], choices=PRESET_NAMES)
    p.add_argument("--frames", nargs="+", type=int, default=[50, 200, 800, 3200])
    p.add_argument("--stages", nargs="+", default=["ddim", "decode", "e2e"], choices=STAGES)
    p.add_argument(
        "--impls", nargs="+", default=["ours", "ours-faithful", "official"], choices=IMPLS
    )
    p.add_argument(
        "--steps", type=int, default=20, help="DDIM steps (official: 20; use 3-5 on CPU)"
    )
    p.add_argument(
        "--official",
        type=Path,
        default=None,
        help="checkout of Hanbo-Cheng/DAWN-pytorch (needs einops-exts, rotary-embedding-torch==0.3.5)",
    )
    p.add_argument(
        "--max-frames",
        nargs="*",
        default=[],
        metavar="IMPL=N",
        help="skip IMPL above N frames, e.g. official=200 ours-faithful=800 (O(F^2) memory)",
    )
    p.add_argument(
        "--check-frames",
        nargs="*",
        type=int,
        default=[200],
        help="frame counts at which outputs of ours / official are compared",
    )
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--threads", type=int, default=torch.get_num_threads())
    p.add_argument("--decode-batch", type=int, default=16)
    p.add_argument("--autocast", choices=["none", "bf16", "fp16"], default="none", help="ours only")
    p.add_argument(
        "--compile",
        action="store_true",
        help="torch.compile our UNet forward (inductor, as `generate --compile`); each ddim/e2e "
        "row is the steady-state call, its first call (compile included) is reported beside it",
    )
    p.add_argument(
        "--ours-allocator",
        choices=["policy", "default"],
        default="policy",
        help="ours: freed memory kept for reuse as `talkinghead generate` does "
        "(talkinghead.allocator), or glibc's defaults; see minor_faults in the JSON rows",
    )
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--golden-dir", type=Path, default=DEFAULT_GOLDEN)
    p.add_argument("--timeout", type=float, default=1800, help="seconds per measurement")
    p.add_argument("--out", type=Path, default=HERE / "results")
    p.add_argument("--no-plot", action="store_true")
    args = p.parse_args(argv)
    # the workers run in benchmarks/: every path they get is made absolute here, once
    args.out, args.golden_dir = args.out.resolve(), args.golden_dir.resolve()
    if args.official is not None:
        args.official = args.official.resolve()
    return args


def _limits(items: list[str]) -> dict[str, int]:
    out = {}
    for item in items:
        impl, _, n = item.partition("=")
        if impl not in IMPLS or not n.isdigit():
            raise SystemExit(f"--max-frames takes IMPL=N with IMPL in {IMPLS}, got {item!r}")
        out[impl] = int(n)
    return out


def official_attention_gib(preset: str, frames: int) -> float:
    """Estimated peak of the official O(F^2) temporal attention (dawn_spec.md §4.2): ~3 live
    float32 (pixels, 8 heads, F, F) logits tensors at the latent resolution S/4."""
    side = (256 if preset == "dawn-256" else 128) // 4
    return 3 * 4 * side * side * 8 * frames**2 / 2**30


def available_gib(device: str) -> float:
    if device.startswith("cuda"):
        return torch.cuda.mem_get_info()[0] / 2**30
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemAvailable:"):
            return int(line.split()[1]) / 2**20
    return float("inf")


def worker_env(
    impl: str, threads: int, official_wait: str = "default", ours_allocator: str = "policy"
) -> dict[str, str]:
    """Environment of a worker: ours with the process policy of the CLI's ``generate``
    (``talkinghead.threads``: passive OpenMP wait unless OMP_WAIT_POLICY says otherwise;
    ``talkinghead.allocator``: freed memory reused, or glibc's defaults with
    ``ours_allocator="default"``); the official code with OpenMP's and glibc's defaults, as its
    users run it, or the passive wait with ``official_wait="passive"``."""
    if impl != "official":
        memory = malloc_env() if ours_allocator == "policy" else {}
        return {**os.environ, **thread_env(threads), **memory}
    env = {k: v for k, v in os.environ.items() if k != "OMP_WAIT_POLICY"}
    env["OMP_NUM_THREADS"] = str(threads)
    if official_wait == "passive":
        env["OMP_WAIT_POLICY"] = "PASSIVE"
    return env


def run_one(
    spec: Spec, timeout: float, env: dict[str, str] | None = None, allocator: str = "policy"
) -> dict[str, object]:
    """One measurement in a fresh interpreter; failures (e.g. out of memory) become a row too.

    ``env``: the worker's environment (default: :func:`worker_env` of the spec, with our
    ``allocator`` policy).
    """
    cmd = [sys.executable, str(HERE / "workloads.py"), json.dumps(asdict(spec))]
    base = env if env is not None else worker_env(spec.impl, spec.threads, ours_allocator=allocator)
    env = {**base, "TQDM_DISABLE": "1", "PYTHONPATH": str(HERE)}
    start = time.perf_counter()
    try:
        proc = subprocess.run(
            cmd, check=False, capture_output=True, text=True, timeout=timeout, env=env, cwd=HERE
        )
    except subprocess.TimeoutExpired:
        return {**asdict(spec), "error": f"timeout after {timeout:.0f} s"}
    for line in proc.stdout.splitlines():
        if line.startswith("RESULT "):
            return json.loads(line[len("RESULT ") :])
    tail = (proc.stderr or proc.stdout).strip().splitlines()[-3:]
    reason = "killed (out of memory?)" if proc.returncode < 0 else " | ".join(tail)
    return {
        **asdict(spec),
        "error": f"exit {proc.returncode} after {time.perf_counter() - start:.0f} s: {reason}",
    }


def compare(rows: list[dict[str, object]]) -> list[dict[str, object]]:
    """Max abs / rel error of every saved output against the official one of the same configuration."""
    out = []
    saved = {
        (r["impl"], r["preset"], r["stage"], r["frames"]): r["save"]
        for r in rows
        if r.get("save") and "error" not in r and Path(str(r["save"])).is_file()
    }
    for (impl, preset, stage, frames), path in saved.items():
        ref_path = saved.get(("official", preset, stage, frames))
        if impl == "official" or ref_path is None:
            continue
        ours, ref = load_file(str(path)), load_file(str(ref_path))
        for name in sorted(set(ours) & set(ref)):
            diff = (ours[name].double() - ref[name].double()).abs().max().item()
            scale = ref[name].double().abs().max().item()
            out.append(
                {
                    "impl": impl,
                    "preset": preset,
                    "stage": stage,
                    "frames": frames,
                    "tensor": name,
                    "max_abs": diff,
                    "max_rel": diff / scale if scale else float("nan"),
                }
            )
    return out


def format_table(rows: list[dict[str, object]]) -> str:
    head = "| preset | stage | frames | impl | wall s | call peak RSS MiB | process peak RSS MiB | CUDA peak MiB |"
    lines = [head, "|---|---|---:|---|---:|---:|---:|---:|"]
    for r in sorted(
        rows, key=lambda r: (r["preset"], r["stage"], r["frames"], IMPLS.index(r["impl"]))
    ):
        if "error" in r:
            lines.append(
                f"| {r['preset']} | {r['stage']} | {r['frames']} | {r['impl']} | {r['error']} | | | |"
            )
            continue
        cuda = f"{r['cuda_call_peak_mib']:.0f}" if "cuda_call_peak_mib" in r else "-"
        lines.append(
            f"| {r['preset']} | {r['stage']} | {r['frames']} | {r['impl']} | {r['wall_s']:.2f} | "
            f"{r['call_peak_rss_mib']:.0f} | {r['process_peak_rss_mib']:.0f} | {cuda} |"
        )
    return "\n".join(lines)


def ratios(rows: list[dict[str, object]]) -> list[str]:
    """official / ours for time and the two memory measures, per configuration."""
    ok = {(r["impl"], r["preset"], r["stage"], r["frames"]): r for r in rows if "error" not in r}
    lines = []
    for (impl, preset, stage, frames), r in sorted(ok.items(), key=str):
        ref = ok.get(("official", preset, stage, frames))
        if impl != "ours" or ref is None:
            continue
        lines.append(
            f"{preset} {stage} F={frames}: official/ours time x{ref['wall_s'] / r['wall_s']:.2f}, "
            f"call peak RSS x{ref['call_peak_rss_mib'] / max(r['call_peak_rss_mib'], 1e-9):.2f}, "
            f"process peak RSS x{ref['process_peak_rss_mib'] / r['process_peak_rss_mib']:.2f}"
        )
    return lines


def compile_lines(rows: list[dict[str, object]]) -> list[str]:
    """First (compiling) vs steady-state call of every compiled row."""
    return [
        f"{r['preset']} {r['stage']} F={r['frames']} {r['impl']} compiled: first call "
        f"{r['first_call_s']:.2f} s (compile ~{r['compile_s']:.2f} s), steady {r['wall_s']:.2f} s"
        + (" [compile failed: ran eagerly]" if r.get("compile_fell_back") else "")
        for r in rows
        if "first_call_s" in r and "error" not in r
    ]


def plot(rows: list[dict[str, object]], path: Path) -> None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError as err:
        raise SystemExit(
            "the plot needs matplotlib (benchmark only): pip install matplotlib, or pass --no-plot"
        ) from err
    groups = sorted({(r["preset"], r["stage"]) for r in rows if "error" not in r})
    fig, axes = plt.subplots(
        2, max(1, len(groups)), figsize=(4.5 * max(1, len(groups)), 7), squeeze=False
    )
    for col, (preset, stage) in enumerate(groups):
        for impl in IMPLS:
            pts = sorted(
                (r["frames"], r["wall_s"], r["call_peak_rss_mib"])
                for r in rows
                if "error" not in r
                and (r["preset"], r["stage"], r["impl"]) == (preset, stage, impl)
            )
            if not pts:
                continue
            f, t, m = zip(*pts)
            axes[0][col].plot(f, t, "o-", label=impl)
            axes[1][col].plot(f, m, "o-", label=impl)
        axes[0][col].set_title(f"{preset} / {stage}")
        axes[0][col].set_ylabel("wall time, s")
        axes[1][col].set_ylabel("peak RSS during call, MiB")
        for ax in (axes[0][col], axes[1][col]):
            ax.set_xscale("log")
            ax.set_yscale("log")
            ax.set_xlabel("frames")
            ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main(argv: list[str] | None = None) -> None:
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    args = parse_args(argv)
    impls = [i for i in args.impls if i != "official" or args.official is not None]
    limits = _limits(args.max_frames)
    args.out.mkdir(parents=True, exist_ok=True)
    rows = []
    for preset in args.presets:
        for stage in args.stages:
            for frames in args.frames:
                for impl in impls:
                    if frames > limits.get(impl, frames) or (
                        impl == "official" and preset == "tiny"
                    ):
                        continue
                    if (
                        impl == "official"
                        and stage != "decode"
                        and official_attention_gib(preset, frames) > available_gib(args.device)
                    ):
                        # would be killed for memory (and starve whatever else runs on the machine)
                        rows.append(
                            {
                                "impl": impl,
                                "preset": preset,
                                "stage": stage,
                                "frames": frames,
                                "error": f"skipped: needs ~{official_attention_gib(preset, frames):.0f} GiB "
                                "for its O(F^2) attention",
                            }
                        )
                        continue
                    check = frames in args.check_frames and args.official is not None
                    spec = Spec(
                        impl=impl,
                        preset=preset,
                        stage=stage,
                        frames=frames,
                        steps=args.steps,
                        threads=args.threads,
                        device=args.device,
                        seed=args.seed,
                        decode_batch=args.decode_batch,
                        golden_dir=str(args.golden_dir),
                        official=str(args.official) if args.official else None,
                        save=str(args.out / f"out_{impl}_{preset}_{stage}_{frames}.safetensors")
                        if check
                        else None,
                        autocast=args.autocast if impl == "ours" else "none",
                        compile=args.compile and impl == "ours",
                    )
                    row = run_one(spec, args.timeout, allocator=args.ours_allocator)
                    rows.append(row)
                    logger.info(
                        "%s",
                        json.dumps(
                            {
                                k: row.get(k)
                                for k in (
                                    "impl",
                                    "preset",
                                    "stage",
                                    "frames",
                                    "wall_s",
                                    "call_peak_rss_mib",
                                    "process_peak_rss_mib",
                                    "first_call_s",
                                    "compile_s",
                                    "error",
                                )
                            }
                        ),
                    )
    errors = compare(rows)
    report = {
        **provenance(argv, threads=args.threads, device=args.device),
        "rows": rows,
        "equality": errors,
        "ratios": ratios(rows),
    }
    (args.out / "generate.json").write_text(json.dumps(report, indent=2))
    sys.stdout.write(format_table(rows) + "\n")
    for line in report["ratios"] + compile_lines(rows):
        sys.stdout.write(line + "\n")
    for e in errors:
        sys.stdout.write(
            f"equality {e['preset']} {e['stage']} F={e['frames']} {e['impl']} vs official, "
            f"{e['tensor']}: max abs {e['max_abs']:.3g}, max rel {e['max_rel']:.3g}\n"
        )
    if not args.no_plot and rows:
        plot(rows, args.out / "generate.png")


if __name__ == "__main__":
    main()
