"""A small DiffTalk from nothing, in one command: ``make difftalk-small`` (CPU, about 3 h on one core).

Steps, each skipped when ``WORK/done/<step>`` exists, so a re-run resumes where it stopped (the
training stages resume from their last checkpoint, ``train/loop.py``; see ``train/recipe.py``):

1. ``data``: the demo models' synthetic set (``demo.DEMO_SET``: ``--clips`` clips of
   4 s at 64 px, 8 people, a 1.4x mouth, zoom 1.5: the mouth spans about 4 x 2 latent cells), a
   tenth held out; then 68-point
   landmarks per frame (``difftalk.landmarks``) from the 3DDFA_V2 face assets, the detector and
   landmarker the pipeline uses at inference, so training and generation share one definition;
2. ``vq``: the first stage, a VQ autoencoder of the vq-f4 architecture at 1/8 width (preset
   ``small``, stage ``difftalk-vq``: LDM's vq-f4 cannot be downloaded here, and an untrained one
   would hand the denoiser meaningless latents), exported to ``WORK/vq_model``;
3. ``denoiser``: the DiffTalk UNet and condition encoders (stage ``difftalk``) on the frozen VQ;
   the latents of every frame are encoded once (``WORK/denoiser/latents``) before the processes start;
4. ``export``: the model directory ``WORK/model`` and a demo input beside it: a held-out clip's
   video (``WORK/demo/clip.mp4``) and another held-out clip's speech (``WORK/demo/speech.wav``);
5. ``demo``: ``talkinghead generate --model WORK/model --video WORK/demo/clip.mp4 --audio
   WORK/demo/speech.wav --face3d F --no-crop -o WORK/demo/dubbed.mp4`` (the synthetic frames are
   face crops already, as prepared training clips are);
6. ``eval``: ``talkinghead eval-synth`` on the held-out clips: the mouth opening of each clip
   re-voiced with its own speech against the truth, at ``--eval-steps`` DDIM steps on every clip
   and at 20 / 50 / 200 on the first ``--steps-clips`` (what fewer steps cost); ``WORK/eval.json``.

``--vq-minutes`` / ``--denoiser-minutes`` give a stage a wall-clock budget instead (its step count
is then fixed from the first steps' speed, ``train/time_budget.py``; ``--X-steps``, when also
given, stays a maximum), for a GPU run or a longer one.

``--face3d`` is the 3DDFA_V2 assets folder (FaceBoxesProd.pth, mb05_120x120.pth or
mb1_120x120.pth, param_mean_std_62d_120x120.npz/.pkl; MIT, github.com/cleardusk/3DDFA_V2);
it defaults to ``../shared/media/face3d`` beside the repository. ``WORK`` defaults to
``runs/difftalk_small`` (ignored by git); ``times.json`` there holds each step's wall and CPU
time. Training runs under ``torchrun`` in ``--procs`` one-thread processes; ``--stage vq|denoiser``
is what torchrun calls, not meant to be run by hand.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PRESET = "small"
UNCAPPED = 1_000_000  # the step count of a stage that trains for its --X-minutes


@dataclass(frozen=True)
class Budget:
    """Steps per stage and batch per process. The defaults are the counts that 40- and 50-minute
    budgets decided on one core of a 2-core CPU: session 10's first stage (RESULTS.md run 23) and
    session 11's denoiser (run 25), the model that follows the mouth on held-out clips."""

    vq_steps: int = 4466
    denoiser_steps: int = 7165
    vq_batch: int = 16
    denoiser_batch: int = 16
    vq_minutes: float | None = None  # wall-clock budget instead of ``vq`` steps
    denoiser_minutes: float | None = None


def stage_config(stage: str, work: Path, budget: Budget):
    """The ``TrainConfig`` of one training stage ("vq" or "denoiser")."""
    from talkinghead.train.config import TrainConfig

    common = {"data": str(work / "data"), "run_dir": str(work / stage), "preset": PRESET,
              "progress": False, "log_every": 25}  # fmt: skip
    if stage == "vq":
        return TrainConfig(
            stage="difftalk-vq", steps=budget.vq_steps, batch_size=budget.vq_batch, optimizer="adam",
            lr=5e-4, betas=(0.5, 0.9), warmup_steps=50, grad_clip=1.0, ckpt_every=200,
            time_budget_min=budget.vq_minutes, **common,
        )  # fmt: skip
    return TrainConfig(
        stage="difftalk", steps=budget.denoiser_steps, batch_size=budget.denoiser_batch, lr=3e-4,
        warmup_steps=100, grad_clip=1.0, ema_decay=0.995, ckpt_every=200,
        time_budget_min=budget.denoiser_minutes,
        first_stage=str(work / "vq_model"), **common,
    )  # fmt: skip


def run_training_stage(stage: str, work: Path, budget: Budget) -> None:
    """Inside torchrun: train (or resume) one stage."""
    import torch

    from talkinghead.train import run_stage

    torch.set_num_threads(1)
    if run_stage(stage_config(stage, work, budget), resume=True).interrupted:
        sys.exit(130)  # stopped by a signal (checkpoint written): the step is not done


def make_data(work: Path, clips: int, procs: int, face3d: Path) -> None:
    from talkinghead.data.synth.clips import write_synth_dataset
    from talkinghead.demo import DEMO_SET
    from talkinghead.difftalk.landmarks import add_landmarks
    from talkinghead.difftalk.prepare import AnalyzerBackend
    from talkinghead.face.analysis import FaceAnalyzer
    from talkinghead.train.recipe import say

    manifest = write_synth_dataset(
        work / "data", workers=procs, video=False, progress=False, **{**DEMO_SET, "num_clips": clips}
    )
    say(f"data: {len(manifest.split('train'))} train, {len(manifest.split('test'))} held-out clips")
    faceless = add_landmarks(work / "data", AnalyzerBackend(FaceAnalyzer(face3d)))
    if faceless:
        raise RuntimeError(f"no face found in clips {faceless}: check the --face3d assets")
    say("data: 68-point landmarks of every frame written")


def train_vq(work: Path, args: argparse.Namespace) -> None:
    from talkinghead.difftalk.vq_training import export
    from talkinghead.train.recipe import torchrun

    torchrun(__file__, ["--stage", "vq", *common_flags(args)], args.procs)
    export(work / "vq", work / "vq_model")


def train_denoiser(work: Path, args: argparse.Namespace, budget: Budget) -> None:
    import torch

    from talkinghead.difftalk.training import build_task
    from talkinghead.train.recipe import say, torchrun

    torch.set_num_threads(args.procs)
    build_task(stage_config("denoiser", work, budget).resolve())  # fills the latent cache once
    say("denoiser: latents of every frame cached")
    torchrun(__file__, ["--stage", "denoiser", *common_flags(args)], args.procs)


def common_flags(args: argparse.Namespace) -> list[str]:
    """The flags a torchrun child needs to rebuild the same ``Budget``."""
    flags = ["--work", str(args.work)]
    for field in dataclasses.fields(Budget):
        if getattr(args, field.name) is not None:
            flags += ["--" + field.name.replace("_", "-"), str(getattr(args, field.name))]
    return flags


def held_out_clips(work: Path) -> list[Path]:
    from talkinghead.data.layout import CLIPS_DIR, read_manifest

    return [work / "data" / CLIPS_DIR / e.id for e in read_manifest(work / "data").split("test")]


def export_model(work: Path) -> None:
    from talkinghead.data.layout import ClipReader
    from talkinghead.difftalk.training import export
    from talkinghead.media.video import VideoWriter
    from talkinghead.train.recipe import say

    export(work / "denoiser", work / "model")
    clips = held_out_clips(work)
    video_clip, speech_clip = clips[0], clips[1 % len(clips)]
    demo = work / "demo"
    demo.mkdir(exist_ok=True)
    with VideoWriter(demo / "clip.mp4", audio_path=video_clip / "audio.wav") as writer:
        for frame in ClipReader(video_clip).frames:
            writer.write(frame)
    shutil.copyfile(speech_clip / "audio.wav", demo / "speech.wav")
    say(f"export: {work / 'model'}; demo input in {demo} (held-out clips "
        f"{video_clip.name}: video, {speech_clip.name}: speech)")  # fmt: skip


def start_cli(*argv: str) -> subprocess.Popen:
    """``talkinghead ARGV`` in a one-thread process."""
    from talkinghead.train.recipe import one_thread_env

    return subprocess.Popen([sys.executable, "-m", "talkinghead", *argv], env=one_thread_env())


def run_demo(work: Path, args: argparse.Namespace) -> None:
    demo = work / "demo"
    steps = ["--steps", str(args.demo_steps)] if args.demo_steps else []
    inputs = ["--video", str(demo / "clip.mp4"), "--audio", str(demo / "speech.wav")]
    cmd = start_cli(
        "generate", "--model", str(work / "model"), *inputs, "--face3d", str(args.face3d),
        "--no-crop", "--seed", "0", "-q", *steps, "-o", str(demo / "dubbed.mp4"),
    )  # fmt: skip
    if cmd.wait():
        raise RuntimeError("talkinghead generate failed (see above)")


def evaluate(work: Path, args: argparse.Namespace) -> None:
    """Two processes: every held-out clip at --eval-steps; the first --steps-clips at the other
    --compare-steps. Meanwhile the first stage's own ceiling (``vq_ceiling``)."""
    from talkinghead.files import write_json
    from talkinghead.train.recipe import say

    def eval_synth(steps: int, clips: int | None) -> list[str]:
        model = ["--weights", str(work / "model"), "--face3d", str(args.face3d)]
        out = ["eval-synth", str(work / "data"), *model, "--steps", str(steps),
               "--out", str(work / f"eval_{steps}.json")]  # fmt: skip
        return out + (["--max-clips", str(clips)] if clips else [])

    main = start_cli(*eval_synth(args.eval_steps, args.eval_clips))
    ceiling = vq_ceiling(work, args.eval_clips)
    for steps in (s for s in args.compare_steps if s != args.eval_steps):
        if start_cli(*eval_synth(steps, args.steps_clips)).wait():
            raise RuntimeError(f"eval-synth at {steps} steps failed (see above)")
    if main.wait():
        raise RuntimeError("eval-synth failed (see above)")
    summary = summarize_eval(work, args.eval_steps, args.compare_steps, args.steps_clips)
    summary["mouth_corr_vq"] = ceiling
    write_json(work / "eval.json", summary)
    say("eval: " + json.dumps(summary))


def vq_ceiling(work: Path, max_clips: int | None) -> float:
    """Mean held-out mouth correlation of the first stage's own reconstructions (encode, quantise,
    decode the real frames): the best the denoiser can reach through this autoencoder."""
    import numpy as np
    import torch

    from talkinghead.data.layout import ClipReader
    from talkinghead.data.synth.clips import info_style
    from talkinghead.difftalk.networks import decode_latents, encode_images
    from talkinghead.difftalk.training import load_first_stage
    from talkinghead.eval.synth_benchmark import mouth_opening, pearson

    vq = load_first_stage(work / "model")
    corrs = []
    for clip in held_out_clips(work)[:max_clips]:
        reader = ClipReader(clip)
        x = torch.from_numpy(np.array(reader.frames)).permute(0, 3, 1, 2).float() / 127.5 - 1.0
        with torch.no_grad():
            y = torch.cat([decode_latents(vq, encode_images(vq, b)) for b in x.split(25)])
        rec = ((y.clamp(-1, 1) + 1) * 127.5).round().byte().permute(0, 2, 3, 1).numpy()
        style, box = info_style(reader.info), np.asarray(reader.array("mouth_box"))
        corrs.append(pearson(mouth_opening(rec, box, style), reader.array("mouth_open")))
    return float(np.nanmean(corrs))


def summarize_eval(work: Path, eval_steps: int, compared: list[int], steps_clips: int) -> dict:
    """Held-out mouth correlation at ``eval_steps`` and, per DDIM step count, on the same clips."""
    import numpy as np

    runs = {s: json.loads((work / f"eval_{s}.json").read_text()) for s in {*compared, eval_steps}}
    first = sorted(runs[eval_steps]["clips"])[:steps_clips]

    def mean(steps: int, key: str) -> float:
        return float(np.nanmean([runs[steps]["clips"][c][key] for c in first]))

    return {
        "held_out_clips": runs[eval_steps]["num_clips"],
        "ddim_steps": eval_steps,
        "mouth_corr": runs[eval_steps]["mean"]["mouth_corr_gt"],
        "mouth_corr_real_frames": runs[eval_steps]["mean"]["mouth_corr_real"],
        "unchanged_frames": sum(r["unchanged_frames"] for r in runs[eval_steps]["clips"].values()),
        "by_steps": {
            "clips": first,
            **{str(s): mean(s, "mouth_corr_gt") for s in sorted(set(compared))},
        },
    }


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--work", type=Path, default=ROOT / "runs" / "difftalk_small")
    p.add_argument("--face3d", type=Path, default=ROOT.parent / "shared" / "media" / "face3d",
                   help="3DDFA_V2 assets folder")  # fmt: skip
    p.add_argument("--procs", type=int, default=1,
                   help="processes (one thread each; the batch sizes are per process)")  # fmt: skip
    p.add_argument("--clips", type=int, default=240, help="synthetic clips (4 s each)")
    for stage in ("vq", "denoiser"):
        p.add_argument(f"--{stage}-steps", type=int, default=None,
                       help=f"default {getattr(Budget, stage + '_steps')}; none with --{stage}-minutes "
                       "alone (the minutes decide)")  # fmt: skip
    p.add_argument("--vq-batch", type=int, default=Budget.vq_batch, help="per process")
    p.add_argument("--denoiser-batch", type=int, default=Budget.denoiser_batch, help="per process")
    p.add_argument("--vq-minutes", type=float, default=None, help="wall-clock budget of the VQ")
    p.add_argument("--denoiser-minutes", type=float, default=None,
                   help="wall-clock budget of the denoiser")  # fmt: skip
    p.add_argument("--eval-steps", type=int, default=50, help="DDIM steps of the evaluation")
    p.add_argument("--eval-clips", type=int, default=None, help="held-out clips (default: all)")
    p.add_argument(
        "--compare-steps",
        type=int,
        nargs="+",
        default=[20, 50, 200],
        help="DDIM steps compared on the first --steps-clips held-out clips",
    )
    p.add_argument("--steps-clips", type=int, default=2, help="clips of that comparison")
    p.add_argument(
        "--demo-steps",
        type=int,
        default=None,
        help="DDIM steps of the demo video (default: the model's, 50)",
    )
    p.add_argument("--until", default=None, help="stop after this step (data, vq, ..., eval)")
    p.add_argument("--only", default=None, help="comma-separated steps to run")
    p.add_argument("--stage", default=None, help=argparse.SUPPRESS)  # torchrun's entry
    args = p.parse_args(argv)
    args.work = args.work.resolve()
    return args


def budget_from(args: argparse.Namespace) -> Budget:
    """The ``Budget`` of the flags. A stage given ``--X-minutes`` and no ``--X-steps`` trains for its
    minutes: its step count is then no cap (the default counts are one 1-core run's)."""
    values = {f.name: getattr(args, f.name) for f in dataclasses.fields(Budget)}
    for stage in ("vq", "denoiser"):
        if values[f"{stage}_steps"] is None:
            timed = values[f"{stage}_minutes"] is not None
            values[f"{stage}_steps"] = UNCAPPED if timed else getattr(Budget, f"{stage}_steps")
    return Budget(**values)


def main() -> int:
    from talkinghead.train.recipe import run_steps, say

    args = parse_args()
    budget = budget_from(args)
    if args.stage:
        run_training_stage(args.stage, args.work, budget)
        return 0
    if not args.face3d.is_dir():
        sys.exit(f"the 3DDFA_V2 assets folder {args.face3d} does not exist; pass --face3d DIR.")
    args.face3d = args.face3d.resolve()
    say(f"small DiffTalk recipe in {args.work} ({args.procs} processes; {budget})")
    work = args.work
    steps = [
        ("data", lambda: make_data(work, args.clips, args.procs, args.face3d)),
        ("vq", lambda: train_vq(work, args)),
        ("denoiser", lambda: train_denoiser(work, args, budget)),
        ("export", lambda: export_model(work)),
        ("demo", lambda: run_demo(work, args)),
        ("eval", lambda: evaluate(work, args)),
    ]
    run_steps(work, steps, until=args.until, only=set(args.only.split(",")) if args.only else None)
    return 0


if __name__ == "__main__":
    sys.exit(main())
