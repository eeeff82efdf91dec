"""Operator profile of DDIM sampling: calls and self-CPU share per operator, per DDIM step.

    python benchmarks/profile_step.py --preset reduced-golden --frames 200 --steps 2 \\
        [--impl ours|official --official /path/to/DAWN-pytorch] [--threads 2] [--out profile.json]

Builds one implementation exactly as ``workloads.py`` does (same weights, inputs and seeded noise),
runs the ``ddim`` stage (``--steps`` UNet evaluations) once under ``torch.profiler`` and reports, per
step: the number of working kernel calls (no views or allocations: each is at least one pass over
memory and, with several threads, one parallel region), every operator's calls and its share of
the self CPU time, and which attention kernels ran. Operator counts and shares do not depend
on what else runs on the machine (time shares shift little under load; absolute times do), so this is
the tool for a loaded machine; ``load.py`` / ``generate.py`` measure time on a quiet one.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections import Counter, defaultdict
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import torch
from generate import DEFAULT_GOLDEN
from provenance import provenance
from torch.profiler import ProfilerActivity, profile
from workloads import PRESET_NAMES, Spec

ATTENTION_KERNELS = (
    "aten::_scaled_dot_product_flash_attention_for_cpu",
    "aten::_scaled_dot_product_attention_math",
    "aten::_scaled_dot_product_efficient_attention",
    "aten::_scaled_dot_product_flash_attention",
)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--preset", default="reduced-golden", choices=PRESET_NAMES)
    p.add_argument("--frames", type=int, default=200)
    p.add_argument("--steps", type=int, default=2, help="DDIM steps profiled (counts are per step)")
    p.add_argument("--impl", default="ours", choices=["ours", "official"])
    p.add_argument(
        "--official", type=Path, default=None, help="DAWN-pytorch checkout (--impl official)"
    )
    p.add_argument("--threads", type=int, default=torch.get_num_threads())
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--golden-dir", type=Path, default=DEFAULT_GOLDEN)
    p.add_argument("--top", type=int, default=25, help="operators listed in the table")
    p.add_argument("--out", type=Path, default=None, help="write the full profile as JSON here")
    args = p.parse_args(argv)
    if args.impl == "official" and args.official is None:
        p.error("--impl official needs --official /path/to/DAWN-pytorch")
    return args


# operators that do no pass over memory themselves: views, allocations, and wrappers whose work
# is done (and counted) in the operators they call
METADATA_OPS = frozenset(
    f"aten::{name}"
    for name in (
        *("empty", "empty_like", "empty_strided", "as_strided", "view", "_reshape_alias"),
        *("reshape", "_unsafe_view", "transpose", "permute", "t", "slice", "select", "unsqueeze"),
        *("squeeze", "expand", "alias", "detach", "unflatten", "flatten", "split", "unbind"),
        *("split_with_sizes", "chunk", "narrow", "view_as_real", "view_as_complex", "lift_fresh"),
        *("resolve_conj", "resolve_neg", "contiguous", "to", "_to_copy", "clone", "numpy_T"),
        *("matmul", "linear", "einsum", "_convolution", "convolution", "conv2d", "conv3d"),
        *("conv_transpose3d", "scaled_dot_product_attention", "softmax", "layer_norm"),
        *(
            "group_norm",
            "masked_fill",
            "constant_pad_nd",
            "pad",
            "_scaled_dot_product_attention_math",
        ),
    )
)


def summarize(prof: profile, steps: int) -> dict[str, object]:
    """Per-step operator calls and self-CPU shares from a finished profiler.

    ``kernel_calls_per_step`` counts the calls that do the work (no view, allocation or
    dispatching wrapper such as ``matmul`` / ``linear``): each is at least one pass over memory and,
    with several threads, one parallel region.
    """
    events = [e for e in prof.events() if e.name.startswith("aten::")]
    calls: Counter[str] = Counter(e.name for e in events)
    self_us: defaultdict[str, float] = defaultdict(float)
    for e in events:
        self_us[e.name] += e.self_cpu_time_total
    kernels = sum(n for name, n in calls.items() if name not in METADATA_OPS)
    total = sum(self_us.values()) or 1.0
    ops = sorted(
        (
            {
                "op": name,
                "calls_per_step": calls[name] / steps,
                "self_cpu_share": self_us[name] / total,
            }
            for name in calls
        ),
        key=lambda r: -r["self_cpu_share"],
    )
    return {
        "steps": steps,
        "kernel_calls_per_step": kernels / steps,
        "all_calls_per_step": sum(calls.values()) / steps,
        "attention_kernels": {k: calls[k] / steps for k in ATTENTION_KERNELS if calls[k]},
        "ops": ops,
    }


def format_table(summary: dict[str, object], top: int) -> str:
    lines = ["| operator | calls / step | self CPU share |", "|---|---:|---:|"]
    for r in summary["ops"][:top]:  # type: ignore[index]
        lines.append(
            f"| `{r['op']}` | {r['calls_per_step']:g} | {100 * r['self_cpu_share']:.1f} % |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    spec = Spec(
        impl=args.impl,
        preset=args.preset,
        stage="ddim",
        frames=args.frames,
        steps=args.steps,
        threads=args.threads,
        device="cpu",
        seed=args.seed,
        decode_batch=16,
        golden_dir=str(args.golden_dir.resolve()),
        official=str(args.official.resolve()) if args.official else None,
        save=None,
        autocast="none",
        compile=False,
    )
    # the worker functions time their stage with workloads.measure: profile inside that call
    import workloads

    holder: dict[str, profile] = {}
    measure = workloads.measure

    def profiled(fn: Callable[[], object], device: torch.device) -> dict[str, float]:
        with profile(activities=[ProfilerActivity.CPU]) as prof:
            stats = measure(fn, device)
        holder["prof"] = prof
        return stats

    workloads.measure = profiled
    if args.impl == "official":
        import official

        official.measure = profiled
        official.run_official(replace(spec), torch.device("cpu"))
    else:
        workloads.run_ours(spec, torch.device("cpu"))
    summary = summarize(holder["prof"], args.steps)
    report = {
        **provenance(argv, threads=args.threads, device="cpu"),
        "impl": args.impl,
        "preset": args.preset,
        "frames": args.frames,
        **summary,
    }
    sys.stdout.write(format_table(summary, args.top) + "\n")
    sys.stdout.write(
        f"operator calls per step: {summary['kernel_calls_per_step']:g} working kernels, "
        f"{summary['all_calls_per_step']:g} in all (views included); attention kernels per step: "
        f"{summary['attention_kernels']}\n"
    )
    if args.out is not None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
