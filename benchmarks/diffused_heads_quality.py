"""Quality cost of Diffused Heads' fewer-step samplers on a trained model, against the official sampler.

    python benchmarks/diffused_heads_quality.py --model diffused-heads-demo --data runs/dh-demo/data \\
        [--clips 2] [--seconds 2] [--reference ancestral:100] \\
        [--runs ddim:10 dpmpp-2m:10 ddim:5 ancestral:20] [--threads 2] [--out DIR]

On the first ``--clips`` held-out clips of a ``talkinghead data synth`` set (cut to ``--seconds``),
every run generates the clip from its first frame and its speech with the same seed as the
reference (the official respaced ancestral sampler with 100 steps, the default of
``talkinghead generate``). Per run:

* ``psnr_vs_reference``: PSNR (dB, 0..255) of its frames against the reference's;
* ``mouth_corr``: the mouth opening in its frames against the clip's truth (``eval-synth``'s measure,
  ``eval.synth_benchmark.video_scores``), next to the reference's;
* ``sec_per_frame`` and ``speedup`` against the reference.

The reference is stochastic (a fresh z at every step), so two of its draws differ too: the row
``reference, other seed`` (seed + 1000) is that spread, the floor of ``psnr_vs_reference``. A run
as close to the reference as another draw of it costs nothing measurable. Prints a table and writes
``<out>/diffused_heads_quality.json``. Do not read the times if another job shared the CPU (the JSON
records the load average).
"""

from __future__ import annotations

import argparse
import dataclasses
import time
from typing import Any

import numpy as np
import passive_wait  # noqa: F401  (before torch: idle OpenMP threads sleep, as under the CLI)
import torch
from synth_scoring import add_scoring_flags, clip_reader, open_model_and_data, write_result

from talkinghead.data.layout import ClipReader
from talkinghead.eval.metrics import psnr
from talkinghead.eval.synth_benchmark import video_scores

FLOOR_SEED_OFFSET = 1000  # the reference's second draw


def parse_run(text: str) -> tuple[str, int]:
    """``"ddim:10"`` -> ("ddim", 10)."""
    sampler, _, steps = text.partition(":")
    if not steps.isdigit():
        raise argparse.ArgumentTypeError(f"{text!r} is not SAMPLER:STEPS (e.g. ddim:10)")
    return sampler, int(steps)


def generate(pipe: Any, source: np.ndarray, audio: np.ndarray, run: tuple[str, int], seed: int):
    """(F, S, S, 3) uint8 frames and the seconds the call took."""
    options = dataclasses.replace(
        pipe.options_class(), sampler=run[0], num_steps=run[1], seed=seed, crop=False
    )
    start = time.perf_counter()
    frames = np.concatenate(list(pipe(source, audio, options).frames))
    return frames, time.perf_counter() - start


def clip_rows(pipe: Any, reader: ClipReader, args: argparse.Namespace, seed: int) -> list[dict]:
    """One row per run on one clip: the reference (``psnr_vs_reference`` None), its other draw, then
    ``args.runs``."""
    num_frames = min(reader.num_frames, round(args.seconds * 25))
    audio = reader.audio()[: num_frames * 640]  # 16 kHz / 25 fps
    source = np.asarray(reader.frames[0])
    reference, ref_seconds = generate(pipe, source, audio, args.reference, seed)
    runs = [("reference, other seed", args.reference, seed + FLOOR_SEED_OFFSET)]
    runs += [(f"{s}:{n}", (s, n), seed) for s, n in args.runs]
    videos = [(name, *generate(pipe, source, audio, run, s)) for name, run, s in runs]
    truth = torch.from_numpy(reference).float()
    return [
        {
            "run": name,
            "clip": reader.dir.name,
            "frames": num_frames,
            "psnr_vs_reference": None
            if frames is reference
            else psnr(torch.from_numpy(frames).float(), truth),
            "mouth_corr": video_scores(frames, reader)["mouth_corr"],
            "sec_per_frame": seconds / num_frames,
            "speedup": ref_seconds / seconds,
        }
        for name, frames, seconds in [("reference", reference, ref_seconds), *videos]
    ]


def summarize(rows: list[dict]) -> list[dict]:
    """Means over clips per run, in run order (None where a run has no value: the reference's PSNR)."""

    def mean(values: list[float | None]) -> float | None:
        present = [v for v in values if v is not None]
        return float(np.mean(present)) if present else None

    names = list(dict.fromkeys(row["run"] for row in rows))
    keys = ("psnr_vs_reference", "mouth_corr", "sec_per_frame", "speedup")
    return [
        {"run": n, **{k: mean([r[k] for r in rows if r["run"] == n]) for k in keys}} for n in names
    ]


def table(summary: list[dict], reference: tuple[str, int]) -> str:
    lines = [
        f"reference: {reference[0]}:{reference[1]}",
        f"{'run':<24}{'PSNR vs ref (dB)':>18}{'mouth corr':>12}{'s / frame':>11}{'speedup':>9}",
    ]
    for row in summary:
        db = "-" if row["psnr_vs_reference"] is None else f"{row['psnr_vs_reference']:.2f}"
        lines.append(
            f"{row['run']:<24}{db:>18}{row['mouth_corr']:>12.3f}"
            f"{row['sec_per_frame']:>11.3f}{row['speedup']:>9.2f}"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_scoring_flags(parser, "a `talkinghead data synth` set")
    parser.add_argument("--clips", type=int, default=2, help="first N held-out clips")
    parser.add_argument("--seconds", type=float, default=2.0, help="seconds of each clip")
    parser.add_argument("--reference", type=parse_run, default=("ancestral", 100))
    parser.add_argument(
        "--runs",
        type=parse_run,
        nargs="+",
        default=[("ddim", 10), ("dpmpp-2m", 10), ("ddim", 5), ("ancestral", 20)],
    )
    parser.add_argument("--seed", type=int, default=0, help="seed of the first clip (clip i: +i)")
    args = parser.parse_args(argv)
    pipe, manifest = open_model_and_data(args)
    rows = []
    for i, entry in enumerate(manifest.split("test")[: args.clips]):
        rows += clip_rows(pipe, clip_reader(args, manifest, entry.id), args, args.seed + i)
    summary = summarize(rows)
    print(table(summary, args.reference))
    result = {"reference": list(args.reference), "summary": summary, "rows": rows}
    write_result(args, argv, "diffused_heads_quality.json", result)


if __name__ == "__main__":
    main()
