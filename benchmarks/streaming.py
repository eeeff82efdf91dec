"""Streaming DAWN (issue #18): latency, throughput, memory and quality against the all-at-once call.

    python benchmarks/streaming.py [--model demo|DIR] [--steps 20 8] [--sampler ddim]
        [--configs 40:10:10 24:8:6] [--long-seconds 600] [--clips 4] [--clip-seconds 8]
        [--threads 2] [--out benchmarks/results/streaming]

Per windowing ``W:O:L`` (window frames, overlap, look-ahead; ``DawnPipeline.stream``):

* **Speed** on a long clip (the model's demo speech repeated to ``--long-seconds``, fed as 1 s
  chunks like a live source): time to first frame (from the call, portrait prepared), frames per
  second over the whole clip and the real-time factor (fps / 25), peak RSS of the process and its
  growth over the run (``ru_maxrss``; the first window's allocations included).
* **Quality** on ``--clips`` held-out synthetic clips (``data.synth.synthesize_clip`` with seeds
  ``(0, 200000 + i)``, outside the training range, drawn as the demo model's training set; the
  clip's half-open-mouth frame with its true face is the portrait, as the demo's): mouth-opening correlation with the truth and blink rate (``eval.synth_benchmark``
  helpers) of the stream and of the all-at-once call with the same seed (PBNet motion in both),
  and the seam ratio: frame-to-frame latent change at window boundaries over its median elsewhere
  (``dawn.streaming.seam_ratio``; goal <= 1.5).

The process runs as ``talkinghead generate --stream`` does: idle threads sleep (``passive_wait``)
and freed memory is kept for reuse (``talkinghead.allocator``; without it the first setting of a
run pays glibc's page faults, 1.3x slower). Every windowing runs at each of ``--steps``. Prints
each row as soon as it is measured and rewrites ``<out>/streaming.json`` (with the command and the
machine's load) after every row, so a long run that is stopped keeps what it measured.
"""

from __future__ import annotations

import argparse
import json
import logging
import resource
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import passive_wait  # noqa: F401  (before torch: idle threads sleep)
import torch
from provenance import provenance

from talkinghead.allocator import reuse_freed_memory
from talkinghead.dawn.configs import GenerateOptions
from talkinghead.dawn.pipeline import DawnPipeline
from talkinghead.dawn.streaming import StreamOptions, seam_ratio, stream_latents
from talkinghead.demo import (
    DEMO_DIR,
    DEMO_IDENTITIES,
    DEMO_MOUTH_SCALE,
    DEMO_ZOOM,
    SPEECH,
    demo_pipeline,
)
from talkinghead.eval.metrics import count_blinks
from talkinghead.eval.synth_benchmark import _BLINK_DROP, eye_signal, mouth_opening, pearson
from talkinghead.face.analysis import FaceState
from talkinghead.files import atomic_write_text
from talkinghead.media.audio import load_audio

logger = logging.getLogger("benchmarks.streaming")
HERE = Path(__file__).resolve().parent
FPS = 25
GOALS = {"ttff_s": 2.0, "rtf": 1.0, "mouth_corr_diff": 0.05, "blink_rate_rel_diff": 0.10,
         "seam_ratio": 1.5}  # fmt: skip


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default="demo", help="demo (packaged) or a model directory")
    p.add_argument("--steps", type=int, nargs="+", default=[20], help="sampler steps (each)")
    p.add_argument("--sampler", default="ddim", choices=["ddim", "dpmpp-2m"])
    p.add_argument(
        "--configs",
        nargs="+",
        default=["40:10:10"],
        metavar="W:O:L",
        help="window frames : overlap : look-ahead",
    )
    p.add_argument("--long-seconds", type=float, default=600.0, help="long clip for speed/memory")
    p.add_argument("--clips", type=int, default=4, help="held-out synthetic clips for quality")
    p.add_argument("--clip-seconds", type=float, default=8.0, help="length of each clip")
    p.add_argument("--threads", type=int, default=2, help="torch CPU threads")
    p.add_argument("--device", default="cpu")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default=str(HERE / "results" / "streaming"))
    return p.parse_args(argv)


def load(model: str, device: str) -> DawnPipeline:
    if model == "demo":
        return demo_pipeline(device=device)
    return DawnPipeline.from_pretrained(model, device=device)


def live_chunks(samples: np.ndarray, seconds: float, chunk: int = 16000):
    """``samples`` repeated to ``seconds``, as 1 s chunks made on the fly (flat memory)."""
    total, done = int(seconds * 16000), 0
    while done < total:
        start = done % len(samples)
        piece = samples[start : start + min(chunk, total - done)]
        done += len(piece)
        yield piece


def speed(pipe, portrait, options, stream: StreamOptions, seconds: float) -> dict[str, float]:
    speech = load_audio(DEMO_DIR / SPEECH)
    rss0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    start = time.perf_counter()
    first, frames = None, 0
    for batch in pipe.stream(portrait, live_chunks(speech, seconds), options,
                             window_frames=stream.window_frames, overlap=stream.overlap,
                             lookahead=stream.lookahead):  # fmt: skip
        first = first if first is not None else time.perf_counter() - start
        frames += len(batch)
    wall = time.perf_counter() - start
    rss1 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return {"frames": frames, "ttff_s": first, "fps": frames / wall, "rtf": frames / wall / FPS,
            "peak_rss_mib": rss1 / 1024, "rss_growth_mib": (rss1 - rss0) / 1024}  # fmt: skip


def held_out_clip(index: int, seconds: float, resolution: int):
    """Synthetic clip ``(0, 200000 + index)`` drawn as the demo model's training set (its people,
    mouth size and framing), and the face of its half-open-mouth frame: the portrait (as the demo's)."""
    from talkinghead.data.mouth_reference import reference_index
    from talkinghead.data.synth.clips import person_seed, synthesize_clip

    seed = (0, 200_000 + index)
    person = person_seed(seed, DEMO_IDENTITIES)
    clip = synthesize_clip(list(seed), seconds, resolution, zoom=DEMO_ZOOM,
                           style_seed=list(person), mouth_scale=DEMO_MOUTH_SCALE)  # fmt: skip
    ref = reference_index(clip.mouth_open, clip.blink)
    h, w = clip.frames.shape[1:3]
    x0, x1, y0, y1 = (float(v) for v in clip.bbox[ref][:4])
    face = FaceState(box=np.array([x0, y0, x1, y1, 1.0]), pose=clip.pose[ref], eye=clip.eye[ref],
                     bbox_crop=np.array([x0, x1, y0, y1, h, w], np.int64), crop_box=(0, 0, w, h),
                     detector="ground truth")  # fmt: skip
    return clip, clip.frames[ref], face


def scores(frames: np.ndarray, clip) -> tuple[float, float]:
    """(mouth-opening correlation with the truth, blinks per second) of generated frames."""
    seconds = len(frames) / FPS
    mouth = pearson(mouth_opening(frames, clip.mouth_box, clip.style), clip.mouth_open)
    blinks = len(count_blinks(eye_signal(frames, clip.bbox, clip.style), _BLINK_DROP)) / seconds
    return mouth, blinks


def quality(pipe, options, stream: StreamOptions, args) -> dict[str, Any]:
    rows = []
    for i in range(args.clips):
        clip, image, face = held_out_clip(i, args.clip_seconds, pipe.modules.resolution)
        portrait = pipe.prepare(image, options, face=face)
        opts = GenerateOptions(**{**options.__dict__, "seed": args.seed + i})
        whole = np.concatenate(list(pipe(portrait, clip.audio, opts).frames))
        gen = torch.Generator(device=pipe.device).manual_seed(args.seed + i)
        chunks = list(stream_latents(pipe, portrait, clip.audio, opts, stream, gen))
        latents = torch.cat([c.latents for c in chunks], dim=2)
        streamed = np.concatenate(list(pipe.decode(portrait, latents, opts.decode_batch)))
        m_whole, b_whole = scores(whole, clip)
        m_stream, b_stream = scores(streamed, clip)
        bounds = [c.window.new for c in chunks[1:]]
        per_frame = latents[0].permute(1, 0, 2, 3)
        rows.append({
            "mouth_corr_whole": m_whole, "mouth_corr_stream": m_stream,
            "blink_rate_whole": b_whole, "blink_rate_stream": b_stream,
            "seam_ratio": seam_ratio(per_frame, bounds) if bounds else float("nan"),
        })  # fmt: skip
    mean = {k: float(np.nanmean([r[k] for r in rows])) for k in rows[0]}
    mean["mouth_corr_diff"] = abs(mean["mouth_corr_stream"] - mean["mouth_corr_whole"])
    base = max(mean["blink_rate_whole"], 1e-9)
    mean["blink_rate_rel_diff"] = abs(mean["blink_rate_stream"] - mean["blink_rate_whole"]) / base
    return {"clips": rows, "mean": mean}


COLUMNS = ["config", "steps", "ttff_s", "fps", "rtf", "peak_rss_mib", "rss_growth_mib",
           "mouth_corr_whole", "mouth_corr_stream", "mouth_corr_diff", "blink_rate_whole",
           "blink_rate_stream", "blink_rate_rel_diff", "seam_ratio"]  # fmt: skip


def table_row(result: dict[str, Any] | None = None) -> str:
    """One line of the table: its header when ``result`` is None."""
    if result is None:
        return "  ".join(f"{c:>14}" for c in COLUMNS)
    flat = {"config": result["config"], "steps": result["steps"], **result["speed"],
            **result["quality"]["mean"]}  # fmt: skip
    return "  ".join(
        f"{flat[c]:>14.3f}" if isinstance(flat.get(c), float) else f"{flat.get(c)!s:>14}"
        for c in COLUMNS
    )


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    reuse_freed_memory()
    pipe = load(args.model, args.device)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    _, image, face = held_out_clip(10_000, 1.0, pipe.modules.resolution)
    results: list[dict[str, Any]] = []
    print(f"goals: {GOALS}\n{table_row()}", flush=True)
    for steps in args.steps:
        options = GenerateOptions(num_steps=steps, sampler=args.sampler, seed=args.seed,
                                  crop=False)  # fmt: skip
        portrait = pipe.prepare(image, options, face=face)
        for spec in args.configs:
            stream = StreamOptions(*(int(v) for v in spec.split(":")))
            logger.info("%s, %d steps: speed on %.0f s of speech", spec, steps, args.long_seconds)
            row = {"config": spec, "steps": steps,
                   "speed": speed(pipe, portrait, options, stream, args.long_seconds)}  # fmt: skip
            logger.info("%s, %d steps: quality on %d clips", spec, steps, args.clips)
            row["quality"] = quality(pipe, options, stream, args)
            results.append(row)
            print(table_row(row), flush=True)
            summary = {"results": results, "goals": GOALS,
                       **provenance(argv, threads=args.threads, device=args.device)}  # fmt: skip
            text = json.dumps(summary, indent=2, default=float) + "\n"
            atomic_write_text(out / "streaming.json", text)
    return 0


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    sys.exit(main())
