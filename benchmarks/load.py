"""Speed on a quiet and on a loaded machine: ours against the official code, 1 and 2 threads, and the demo.

    python benchmarks/load.py --official /path/to/DAWN-pytorch [--presets reduced-golden dawn-128] \\
        [--frames 200] [--steps 2] [--threads 1 2] [--repeats 2] [--out benchmarks/results/load]

One invocation measures, each row in a fresh process and each row ``--repeats`` times:

* ``ddim`` rows: DDIM sampling of ``--frames`` frames, ``--steps`` UNet evaluations, for each preset
  and implementation (``ours``, ``official`` given a checkout), the worker of ``generate.py``
  (``workloads.py``: models built and inputs made before the clock; ``wall s`` is the sampling call);
* ``demo`` rows: the whole ``talkinghead demo --threads N`` process (imports, loading, 125 frames,
  ``--demo-steps`` steps, encoding), as a user runs it;

under two conditions, ``quiet`` and ``busy`` (beside one busy-loop child process that this script
starts before the row and stops after it), at every ``--threads`` count. The 1-minute load average
(``os.getloadavg``) is read before each row, before its busy child starts: it says what else was
running. Process policy: ours as the library's entry points set it (``talkinghead.threads``:
passive OpenMP wait, unless ``--ours-wait active``; ``talkinghead.allocator``: freed memory
reused); the official code with OpenMP's and glibc's defaults, as its users run it
(``--official-wait passive`` gives it our wait policy). Writes ``<out>/load.json`` (rows, command,
machine) and ``<out>/load.md`` (the table and the ratios: official / ours, busy / quiet, 1 / 2
threads), and prints the markdown.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from statistics import mean

from generate import DEFAULT_GOLDEN, run_one, worker_env
from provenance import provenance
from workloads import PRESET_NAMES, Spec

logger = logging.getLogger("benchmarks.load")
HERE = Path(__file__).resolve().parent
CONDITIONS = ("quiet", "busy")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--presets", nargs="+", default=["reduced-golden"], choices=PRESET_NAMES)
    p.add_argument("--frames", type=int, default=200)
    p.add_argument("--steps", type=int, default=2, help="DDIM steps of the ddim rows")
    p.add_argument("--impls", nargs="+", default=["ours", "official"], choices=["ours", "official"])
    p.add_argument("--official", type=Path, default=None, help="DAWN-pytorch checkout")
    p.add_argument("--threads", nargs="+", type=int, default=[1, 2])
    p.add_argument("--conditions", nargs="+", default=list(CONDITIONS), choices=CONDITIONS)
    p.add_argument("--repeats", type=int, default=2, help="times each row runs")
    p.add_argument("--demo-steps", type=int, default=20, help="0: no demo rows")
    p.add_argument("--ours-wait", choices=["passive", "active"], default="passive")
    p.add_argument("--official-wait", choices=["default", "passive"], default="default")
    p.add_argument("--settle", type=float, default=5.0, help="seconds of pause before each row")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--golden-dir", type=Path, default=DEFAULT_GOLDEN)
    p.add_argument("--timeout", type=float, default=1800, help="seconds per row")
    p.add_argument("--out", type=Path, default=HERE / "results" / "load")
    args = p.parse_args(argv)
    args.out, args.golden_dir = args.out.resolve(), args.golden_dir.resolve()
    if args.official is not None:
        args.official = args.official.resolve()
    elif "official" in args.impls:
        logger.warning("no --official checkout: the official rows are skipped")
        args.impls = [i for i in args.impls if i != "official"]
    if "official" in args.impls and "tiny" in args.presets:
        p.error("the official code has no tiny preset")
    return args


class BusyLoop:
    """One child process spinning on a core for as long as the ``with`` block lasts."""

    def __init__(self, enabled: bool) -> None:
        self.enabled = enabled
        self.proc: subprocess.Popen[bytes] | None = None

    def __enter__(self) -> None:
        if self.enabled:
            self.proc = subprocess.Popen([sys.executable, "-c", "while True: pass"])

    def __exit__(self, *exc: object) -> None:
        if self.proc is not None:
            self.proc.terminate()
            self.proc.wait()


def ours_env(args: argparse.Namespace, threads: int) -> dict[str, str]:
    env = worker_env("ours", threads)
    if args.ours_wait == "active":
        env["OMP_WAIT_POLICY"] = "ACTIVE"
    return env


def ddim_row(args: argparse.Namespace, impl: str, preset: str, threads: int) -> dict[str, object]:
    spec = Spec(
        impl=impl,
        preset=preset,
        stage="ddim",
        frames=args.frames,
        steps=args.steps,
        threads=threads,
        device="cpu",
        seed=args.seed,
        decode_batch=16,
        golden_dir=str(args.golden_dir),
        official=str(args.official) if args.official else None,
        save=None,
        autocast="none",
        compile=False,
    )
    env = (
        ours_env(args, threads)
        if impl == "ours"
        else worker_env(impl, threads, official_wait=args.official_wait)
    )
    row = run_one(spec, args.timeout, env=env)
    keep = ("wall_s", "cpu_s", "minor_faults", "call_peak_rss_mib", "error")
    return {
        "kind": "ddim",
        "impl": impl,
        "preset": preset,
        "frames": args.frames,
        "steps": args.steps,
        "wait": env.get("OMP_WAIT_POLICY", "default").lower(),
        **{k: row[k] for k in keep if k in row},
    }


def demo_row(args: argparse.Namespace, threads: int, out_dir: Path) -> dict[str, object]:
    """The whole ``talkinghead demo`` process: wall time and its CPU time (user + system)."""
    env = {**ours_env(args, threads), "TQDM_DISABLE": "1"}
    cmd = [sys.executable, "-m", "talkinghead", "demo", "-q", "--threads", str(threads)]
    cmd += ["--steps", str(args.demo_steps), "-o", str(out_dir / "demo.mp4")]
    row: dict[str, object] = {
        "kind": "demo",
        "impl": "ours",
        "preset": "demo",
        "frames": 125,
        "steps": args.demo_steps,
        "wait": env["OMP_WAIT_POLICY"].lower(),
    }
    # the demo is the only child reaped during the call (a busy child is stopped after the row)
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    proc = subprocess.run(cmd, env=env, check=False, capture_output=True, text=True)
    row["wall_s"] = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    row["cpu_s"] = after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime
    if proc.returncode != 0:
        row["error"] = f"exit {proc.returncode}: " + " | ".join(
            proc.stderr.strip().splitlines()[-2:]
        )
    return row


def plan(args: argparse.Namespace) -> list[tuple[str, str, str, str, int, int]]:
    """(kind, impl, preset, condition, threads, repeat) per row; repeats outermost, so that the runs of a row
    are spread over the whole session rather than back to back."""
    rows = []
    for repeat in range(args.repeats):
        for condition in args.conditions:
            for threads in args.threads:
                for preset in args.presets:
                    for impl in args.impls:
                        rows.append(("ddim", impl, preset, condition, threads, repeat))
                if args.demo_steps > 0:
                    rows.append(("demo", "ours", "demo", condition, threads, repeat))
    return rows


def format_table(rows: list[dict[str, object]]) -> str:
    lines = [
        "| kind | preset | impl | condition | threads | wait | run | load 1 min before "
        + "| wall s | CPU s |",
        "|---|---|---|---|---:|---|---:|---:|---:|---:|",
    ]
    for r in rows:
        if "error" in r:
            timing = f"{r['error']} | |"
        else:
            timing = f"{r['wall_s']:.2f} | {r['cpu_s']:.1f} |"
        lines.append(
            f"| {r['kind']} | {r['preset']} | {r['impl']} | {r['condition']} | {r['threads']} | "
            f"{r['wait']} | {r['repeat'] + 1} | {r['load_before']:.2f} | {timing}"
        )
    return "\n".join(lines)


def ratio_lines(rows: list[dict[str, object]]) -> list[str]:
    """official / ours, busy / quiet and 1 / 2 threads, per run (runs are paired by repeat)."""
    ok = {
        (r["kind"], r["preset"], r["impl"], r["condition"], r["threads"], r["repeat"]): r["wall_s"]
        for r in rows
        if "error" not in r
    }

    def runs(a: tuple, b: tuple) -> list[float]:
        return [
            ok[(*a, rep)] / ok[(*b, rep)]
            for rep in sorted({k[-1] for k in ok})
            if (*a, rep) in ok and (*b, rep) in ok
        ]

    def line(label: str, values: list[float]) -> str | None:
        if not values:
            return None
        shown = " / ".join(f"{v:.2f}x" for v in values)
        return f"- {label}: {shown} (mean {mean(values):.2f}x)"

    keys = sorted({k[:5] for k in ok}, key=str)
    out = []
    for kind, preset, impl, condition, threads in keys:
        if impl == "ours" and kind == "ddim":
            out.append(
                line(
                    f"{preset} ddim, {condition}, {threads} thread(s): official / ours",
                    runs(
                        (kind, preset, "official", condition, threads),
                        (kind, preset, "ours", condition, threads),
                    ),
                )
            )
        if condition == "busy":
            out.append(
                line(
                    f"{preset} {kind} {impl}, {threads} thread(s): busy / quiet",
                    runs(
                        (kind, preset, impl, "busy", threads),
                        (kind, preset, impl, "quiet", threads),
                    ),
                )
            )
        if threads == 1 and (kind, preset, impl, condition, 2) in keys:
            out.append(
                line(
                    f"{preset} {kind} {impl}, {condition}: 1 thread / 2 threads",
                    runs((kind, preset, impl, condition, 1), (kind, preset, impl, condition, 2)),
                )
            )
    return [s for s in out if s is not None]


def main(argv: list[str] | None = None) -> None:
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    args = parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for kind, impl, preset, condition, threads, repeat in plan(args):
            time.sleep(args.settle)
            load = os.getloadavg()[0]
            with BusyLoop(condition == "busy"):
                row = (
                    ddim_row(args, impl, preset, threads)
                    if kind == "ddim"
                    else demo_row(args, threads, Path(tmp))
                )
            row.update(condition=condition, threads=threads, repeat=repeat, load_before=load)
            rows.append(row)
            logger.info("%s", json.dumps(row))
    table, ratios = format_table(rows), ratio_lines(rows)
    report = {
        **provenance(argv, threads=max(args.threads), device="cpu"),
        "rows": rows,
        "ratios": ratios,
    }
    (args.out / "load.json").write_text(json.dumps(report, indent=2))
    markdown = "\n".join([f"```\n{report['command']}\n```", "", table, "", *ratios, ""])
    (args.out / "load.md").write_text(markdown)
    sys.stdout.write(markdown)


if __name__ == "__main__":
    main()
