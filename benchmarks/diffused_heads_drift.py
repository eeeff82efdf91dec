"""Drift of Diffused Heads over a long clip, with and without ``stabilize`` (issue #13).

    talkinghead data synth runs/dh-drift --num-clips 1 --seconds 60 --resolution 64 --seed 0 \\
        --identities 8 --mouth-scale 1.4 --zoom 1.5 --no-video
    python benchmarks/diffused_heads_drift.py --model diffused-heads-demo --data runs/dh-drift \\
        [--stabilize 0 15] [--sampler ddim --steps 10] [--segment-seconds 10] [--threads 2] [--out DIR]

Each frame of Diffused Heads is conditioned on the two frames generated before it, so errors can
build up over a clip. The first clip of ``--data`` (a ``talkinghead data synth`` set; the command
above draws the first of the demo models' 8 people, speaking for 60 s) is generated from its first
frame and its whole speech once per ``--stabilize`` value (0: off, the released sampler; N: every
N-th frame re-anchors a motion frame on the identity frame, the train branch's option with N = 15),
with the same seed. Per segment of
``--segment-seconds``, against the identity frame (the clip's first) and the clip's truth:

* ``mouth_corr``: does the mouth still follow the speech (``eval.synth_benchmark.video_scores``);
* ``colour_shift``: distance of the segment's mean RGB from the identity frame's (0..255): a face
  and background that change tone;
* ``sharpness``: variance of the Laplacian over the identity frame's: < 1 blurs, > 1 adds noise;
* ``psnr_vs_identity``: PSNR (dB) of the frames against the identity frame; it also moves with the
  head, so read its trend, not its level.

Prints a table and writes ``<out>/diffused_heads_drift.json``. The fewer-step default keeps 60
seconds within minutes on a CPU; ``--sampler ancestral --steps 100`` is the official setting.
"""

from __future__ import annotations

import argparse
import dataclasses
import time
from typing import Any

import cv2
import numpy as np
import passive_wait  # noqa: F401  (before torch: idle OpenMP threads sleep, as under the CLI)
import torch
from synth_scoring import add_scoring_flags, clip_reader, open_model_and_data, write_result

from talkinghead.data.layout import ClipReader
from talkinghead.eval.metrics import psnr
from talkinghead.eval.synth_benchmark import video_scores


def sharpness(frames: np.ndarray) -> float:
    """Mean variance of the Laplacian of the grey frames (F, S, S, 3) uint8."""
    grey = [cv2.cvtColor(f, cv2.COLOR_RGB2GRAY) for f in frames]
    return float(np.mean([cv2.Laplacian(g, cv2.CV_64F).var() for g in grey]))


def segment_rows(
    video: np.ndarray, identity: np.ndarray, reader: ClipReader, segment: int
) -> list[dict[str, Any]]:
    """Scores of ``video`` (F, S, S, 3) uint8 per ``segment`` frames against the identity frame
    (S, S, 3) and the clip's truth."""
    identity_sharpness = sharpness(identity[None])
    identity_mean = identity.reshape(-1, 3).mean(0)
    target = torch.from_numpy(identity).float()
    rows = []
    for start in range(0, len(video) - segment + 1, segment):
        part = video[start : start + segment]
        rows.append(
            {
                "start_s": start / 25.0,
                "mouth_corr": video_scores(part, reader, start)["mouth_corr"],
                "colour_shift": float(np.linalg.norm(part.reshape(-1, 3).mean(0) - identity_mean)),
                "sharpness": sharpness(part) / identity_sharpness,
                "psnr_vs_identity": float(
                    np.mean([psnr(torch.from_numpy(f).float(), target) for f in part])
                ),
            }
        )
    return rows


def run(pipe: Any, reader: ClipReader, args: argparse.Namespace, stabilize: int) -> dict[str, Any]:
    """Generate the whole clip with ``stabilize`` and score its segments."""
    source = np.asarray(reader.frames[0])
    options = dataclasses.replace(
        pipe.options_class(),
        sampler=args.sampler,
        num_steps=args.steps,
        seed=args.seed,
        stabilize=stabilize,
        crop=False,
        output_size=source.shape[0],  # scored at the clip's side
    )
    start = time.perf_counter()
    video = np.concatenate(list(pipe(source, reader.audio(), options).frames))
    seconds = time.perf_counter() - start
    segment = round(args.segment_seconds * 25)
    return {
        "stabilize": stabilize,
        "frames": len(video),
        "sec_per_frame": seconds / len(video),
        "segments": segment_rows(video, source, reader, segment),
    }


def table(results: list[dict[str, Any]]) -> str:
    header = (
        f"{'stabilize':>9}{'from s':>8}{'mouth corr':>12}{'colour shift':>14}"
        f"{'sharpness':>11}{'PSNR vs id':>12}"
    )
    lines = [header]
    for result in results:
        for seg in result["segments"]:
            lines.append(
                f"{result['stabilize']:>9}{seg['start_s']:>8.0f}{seg['mouth_corr']:>12.3f}"
                f"{seg['colour_shift']:>14.2f}{seg['sharpness']:>11.2f}"
                f"{seg['psnr_vs_identity']:>12.2f}"
            )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_scoring_flags(parser, "a `talkinghead data synth` set (first clip)")
    parser.add_argument("--stabilize", type=int, nargs="+", default=[0, 15])
    parser.add_argument("--sampler", default="ddim")
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--segment-seconds", type=float, default=10.0)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    pipe, manifest = open_model_and_data(args)
    entry = manifest.clips[0]
    results = [run(pipe, clip_reader(args, manifest, entry.id), args, n) for n in args.stabilize]
    print(table(results))
    result = {"clip": entry.id, "sampler": args.sampler, "steps": args.steps, "results": results}
    write_result(args, argv, "diffused_heads_drift.json", result)


if __name__ == "__main__":
    main()
