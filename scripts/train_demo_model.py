"""The packaged demo model from nothing in one command, ``make demo-model`` (GPU minutes, CPU hours).

Steps, each skipped when its ``WORK/done/<step>`` marker exists, so a re-run resumes where it
stopped (the training stages resume from their last checkpoint, ``train/loop.py``):

1. ``data``: synthetic talking faces (``data/synth``): 8 people, a 1.4x mouth, 64 px, zoom 1.5;
2. ``lfg``: the flow autoencoder with half-open-mouth sources and pairs mined by mouth-opening
   difference (``data/mouth_reference.py``) and the mouth-box terms of ``dawn/training/lfg.py``;
   every ``--val-every`` steps the LFG's mouth-opening correlation and PSNR on 4 held-out clips
   are printed and appended to ``lfg/val.jsonl`` (a run whose correlation stays near 0 is dead:
   stop it and change the recipe);
3. ``pose``, ``blink``: the two PBNets;
4. ``a2v``: the A2V-FDM denoiser (stage-1 clips, half-open-mouth reference frames), then
   ``a2v-tune1``, ``a2v-tune2``...: warm restarts of its cosine schedule (``--a2v-tunes``: steps,
   peak learning rate, batch and processes of each), each from the EMA weights of the one before;
5. ``export``: the EMA networks (the last A2V-FDM run's) into ``--model-dir`` (a DAWN model directory with
   ``model_index.json``, ``dawn/training/export.py``; the folder is replaced whole) and the demo
   portrait, speech and ``portrait.json`` beside it (``demo.make_demo_assets``);
6. ``eval``: ``talkinghead eval-synth``'s benchmark (``eval/synth_benchmark.py``) of the exported
   model on the held-out clips, half-open source, in ``--eval-shards`` processes of one thread;
   their rows are merged into ``WORK/eval.json``.

Everything goes to ``--work`` (default ``runs/demo_model``, ignored by git); ``times.json`` there
holds each step's wall and CPU time (all processes; interrupted tries add up). LFG and A2V-FDM run
under ``torchrun`` with ``--procs`` processes (on a CPU the cores split between them; on a CUDA
machine one GPU each, and a step of more processes than GPUs runs in fewer with the same batch),
the PBNets in one process (``--only pose,blink`` runs them beside a running LFG). ``--stage NAME``
is what torchrun and the evaluation processes call; it is not meant to be run by hand.

The defaults are the shipped model's recipe (MODEL_CARD.md): its counts are the ones an H200 run
with ``--lfg-minutes 3 --pbnet-minutes 1.5 --a2v-minutes 3.25`` decided, the second fine-tune the
one a 65-minute 2-core CPU run decided. On one GPU add ``--loader-workers 3``; on a CPU the recipe
takes hours and resumes where it stopped.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from talkinghead.train.recipe import one_thread_env, run_steps, say, torchrun

ROOT = Path(__file__).resolve().parent.parent
STEPS = ("data", "lfg", "pose", "blink", "a2v", "export", "eval")  # plus the a2v-tune steps
SYNTH_AIDS = {  # synthetic-only LFG terms (dawn/training/lfg.py), with the mined pairs
    "lfg_mouth_weight": 10.0,
    "lfg_separation_weight": 1.0,
    "lfg_mouth_region_weight": 10.0,
}
VAL_CLIPS = 4  # held-out clips of the LFG check during training


@dataclass(frozen=True)
class Tune:
    """One warm restart of the A2V-FDM: ``steps`` at peak ``lr``, ``batch`` per process."""

    steps: int
    lr: float
    batch: int
    procs: int

    @classmethod
    def parse(cls, spec: str) -> Tune:
        """``"STEPS:LR:BATCH:PROCS"``, e.g. ``"800:3e-4:8:1"``."""
        try:
            steps, lr, batch, procs = spec.split(":")
            return cls(int(steps), float(lr), int(batch), int(procs))
        except ValueError:
            raise argparse.ArgumentTypeError(f"{spec!r} is not STEPS:LR:BATCH:PROCS") from None

    def __str__(self) -> str:
        return f"{self.steps}:{self.lr:g}:{self.batch}:{self.procs}"

    def on_gpus(self, gpus: int) -> Tune:
        """The same step on a machine with ``gpus`` CUDA devices (0: a CPU): at most one process
        per GPU, the batch per process raised to keep the batch of a step."""
        if gpus == 0 or self.procs <= gpus:
            return self
        return dataclasses.replace(self, batch=self.batch * self.procs // gpus, procs=gpus)


SHIPPED_TUNES = (Tune(800, 3e-4, 8, 1), Tune(1937, 1.5e-4, 2, 2))


@dataclass(frozen=True)
class Budget:
    """Steps per stage; the defaults are the shipped model's (see the module doc)."""

    lfg: int = 3375  # LFG optimiser steps
    pbnet: int = 3000  # steps of each PBNet
    a2v: int = 712  # A2V-FDM steps before the fine-tunes
    lfg_pairs: str = "mouth"  # "random" for the official pairs (a comparison)
    # wall-clock budgets (train/time_budget.py): the step counts above become maxima
    lfg_minutes: float | None = None
    pbnet_minutes: float | None = None
    a2v_minutes: float | None = None
    batch_scale: int = 4  # every stage's batch times this (LFG 32, PBNet 64, A2V-FDM 8)
    loader_workers: int = 0  # DataLoader processes per training process (a GPU waits on data)
    a2v_tunes: tuple[Tune, ...] = field(default=SHIPPED_TUNES)

    def a2v_runs(self) -> list[str]:
        """The A2V-FDM steps in order: ``a2v``, ``a2v-tune1``, ..."""
        return ["a2v", *(f"a2v-tune{i}" for i in range(1, len(self.a2v_tunes) + 1))]

    def steps(self) -> list[str]:
        return [*STEPS[:4], *self.a2v_runs(), *STEPS[5:]]


def stage_config(stage: str, work: Path, budget: Budget):
    """The ``TrainConfig`` of one training stage ("lfg", "pose", "blink", "a2v", "a2v-tuneN")."""
    from talkinghead.train.config import TrainConfig

    data, run, k = str(work / "data"), str(work / stage), budget.batch_scale
    common = {"data": data, "run_dir": run, "preset": "demo", "progress": False, "log_every": 50,
              "num_workers": budget.loader_workers}  # fmt: skip
    if stage == "lfg":
        return TrainConfig(
            stage="lfg", steps=budget.lfg, time_budget_min=budget.lfg_minutes, batch_size=8 * k,
            lr=4e-4, warmup_steps=200,
            ckpt_every=250, lfg_pairs=budget.lfg_pairs, **SYNTH_AIDS, **common,
        )  # fmt: skip
    if stage in ("pose", "blink"):
        return TrainConfig(
            stage="pbnet", net=stage, steps=budget.pbnet, time_budget_min=budget.pbnet_minutes,
            batch_size=16 * k, clip_frames=100,
            ckpt_every=500, **common,
        )  # fmt: skip
    a2v = TrainConfig(
        stage="a2v", steps=budget.a2v, time_budget_min=budget.a2v_minutes, batch_size=2 * k,
        clip_frames=20, lr=5e-4, warmup_steps=50,
        ckpt_every=50, lfg=str(work / "lfg"), a2v_reference="open", mouth_loss_weight=1.0,
        **common,
    )  # fmt: skip
    runs = budget.a2v_runs()
    if stage == "a2v":
        return a2v
    i = runs.index(stage)
    tune = budget.a2v_tunes[i - 1]
    return dataclasses.replace(
        a2v, steps=tune.steps, lr=tune.lr, batch_size=tune.batch, time_budget_min=None,
        init_from=str(work / runs[i - 1]),
    )  # fmt: skip


def lfg_validator(task, work: Path, every: int) -> Callable[[int, float], None]:
    """A ``hook(step, loss)`` printing the LFG's held-out mouth correlation and PSNR (rank 0)."""
    import numpy as np
    import torch

    from talkinghead.data.layout import CLIPS_DIR, ClipReader, read_manifest
    from talkinghead.eval.synth_benchmark import lfg_scores

    data = work / "data"
    manifest = read_manifest(data)
    readers = [ClipReader(data / CLIPS_DIR / e.id) for e in manifest.split("test")[:VAL_CLIPS]]
    log = work / "lfg" / "val.jsonl"

    def hook(step: int, loss: float) -> None:
        if step % every or int(os.environ.get("RANK", "0")) != 0:
            return
        model = task.model
        model.eval()
        with torch.no_grad():
            scores = [
                lfg_scores(model, r, manifest.resolution, source="open", batch_size=25)
                for r in readers
            ]
        model.train()
        row = {"step": step, "loss": loss}
        row.update(
            {k: float(np.mean([s[k] for s in scores])) for k in ("mouth_corr_lfg", "lfg_psnr")}
        )
        with log.open("a") as f:
            f.write(json.dumps(row) + "\n")
        say(f"lfg val step {step}: mouth corr {row['mouth_corr_lfg']:+.3f}, "
            f"PSNR {row['lfg_psnr']:.2f} dB ({len(readers)} held-out clips)")  # fmt: skip

    return hook


def run_training_stage(stage: str, work: Path, budget: Budget, val_every: int) -> None:
    """Inside torchrun: train (or resume) one stage."""
    import torch

    from talkinghead.train import run_stage

    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))
    cfg = stage_config(stage, work, budget).resolve()
    if stage != "lfg":
        result = run_stage(cfg, resume=True)
    else:
        from talkinghead.dawn.training import lfg
        from talkinghead.train.loop import train

        task = lfg.build_task(cfg)
        result = train(cfg, task, resume=True, hooks=[lfg_validator(task, work, val_every)])
    if result.interrupted:
        sys.exit(130)  # stopped by a signal (checkpoint written): the step is not done


def stage_torchrun(stage: str, args: argparse.Namespace) -> None:
    procs = 1 if stage in ("pose", "blink") else args.procs  # the small PBNets: one process
    if stage.startswith("a2v-tune"):
        procs = args.a2v_tunes[int(stage.removeprefix("a2v-tune")) - 1].procs
    argv = ["--stage", stage, "--work", str(args.work), "--val-every", str(args.val_every)]
    threads = max(1, len(os.sched_getaffinity(0)) // procs)  # a CPU's cores split between them
    torchrun(__file__, [*argv, *budget_flags(args)], procs, threads)


def budget_flags(args: argparse.Namespace) -> list[str]:
    flags = ["--lfg-steps", str(args.lfg_steps), "--pbnet-steps", str(args.pbnet_steps),
             "--a2v-steps", str(args.a2v_steps), "--lfg-pairs", args.lfg_pairs,
             "--batch-scale", str(args.batch_scale),
             "--loader-workers", str(args.loader_workers),
             "--a2v-tunes", *map(str, args.a2v_tunes)]  # fmt: skip
    for name in ("lfg_minutes", "pbnet_minutes", "a2v_minutes"):
        if getattr(args, name) is not None:
            flags += ["--" + name.replace("_", "-"), str(getattr(args, name))]
    return flags


def make_data(work: Path) -> None:
    from talkinghead.data.synth.clips import write_synth_dataset
    from talkinghead.demo import DEMO_SET

    workers = len(os.sched_getaffinity(0))
    manifest = write_synth_dataset(
        work / "data", workers=workers, video=False, progress=False, **DEMO_SET
    )
    say(f"data: {len(manifest.split('train'))} train, {len(manifest.split('test'))} held-out clips")


def export_model(work: Path, model_dir: Path, a2v_run: str) -> None:
    """The trained networks into ``model_dir`` (replaced whole), the demo assets beside it."""
    from talkinghead.demo import DEMO_SET, make_demo_assets
    from talkinghead.files import atomic_directory
    from talkinghead.train import export_run

    with atomic_directory(model_dir) as tmp:
        # a2v writes unet, face_loc and the LFG it was trained with (its checkpoint names it)
        for stage in (a2v_run, "pose", "blink"):
            for path in export_run(work / stage, tmp):
                say(f"export: {stage} -> {path.name}")
    make_demo_assets(
        model_dir.parent, identities=DEMO_SET["identities"], mouth_scale=DEMO_SET["mouth_scale"]
    )
    say(f"export: {model_dir} and the demo portrait/speech in {model_dir.parent}")


def evaluate(args: argparse.Namespace) -> None:
    """Score the exported model in ``--eval-shards`` one-thread processes; merge into eval.json."""
    from talkinghead.eval.evaluate import write_json
    from talkinghead.eval.synth_benchmark import format_table, summarize

    n = args.eval_shards
    common = ["--work", str(args.work), "--model-dir", str(args.model_dir), "--eval-clips",
              str(args.eval_clips), "--eval-steps", str(args.eval_steps)]  # fmt: skip
    cmds = [[sys.executable, __file__, "--stage", f"eval:{i}/{n}", *common] for i in range(n)]
    procs = [subprocess.Popen(cmd, env=one_thread_env()) for cmd in cmds]
    codes = [p.wait() for p in procs]  # every shard finishes before any is judged
    if any(codes):
        raise RuntimeError(f"evaluation shards exited with {codes} (see their output above)")
    rows = {}
    for i in range(n):
        rows.update(json.loads((args.work / f"eval_{i}of{n}.json").read_text())["clips"])
    summary = summarize(rows)
    write_json(summary, args.work / "eval.json")
    say("eval (held-out clips, half-open source):\n" + format_table(summary))


def evaluate_shard(args: argparse.Namespace, shard: str) -> None:
    """Inside one evaluation process: score every n-th held-out clip from the i-th."""
    import logging

    import torch

    from talkinghead.eval.evaluate import write_json
    from talkinghead.eval.synth_benchmark import SynthBenchOptions, run_synth_benchmark
    from talkinghead.registry import load_pipeline

    torch.set_num_threads(1)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")  # a row per clip
    i, n = (int(v) for v in shard.split("/"))
    pipe = load_pipeline(args.model_dir)
    options = SynthBenchOptions(
        num_steps=args.eval_steps, pbnet=True, source="open", max_clips=args.eval_clips
    )
    summary = run_synth_benchmark(args.work / "data", pipe, options=options, shard=(i, n))
    write_json(summary, args.work / f"eval_{i}of{n}.json")
    say(f"eval shard {i}/{n}: {summary['num_clips']} clips")


def cuda_devices() -> int:
    import torch

    return torch.cuda.device_count() if torch.cuda.is_available() else 0


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--work", type=Path, default=ROOT / "runs" / "demo_model",
                   help="data, checkpoints, done/ markers, times.json, eval.json")  # fmt: skip
    p.add_argument("--model-dir", type=Path, default=ROOT / "src/talkinghead/assets/demo/model",
                   help="exported model directory; the demo assets go to its parent")  # fmt: skip
    p.add_argument("--procs", type=int, default=1,
                   help="LFG / A2V-FDM training processes (one thread or one GPU each)")  # fmt: skip
    p.add_argument("--lfg-steps", type=int, default=Budget.lfg)
    p.add_argument("--pbnet-steps", type=int, default=Budget.pbnet)
    p.add_argument("--a2v-steps", type=int, default=Budget.a2v)
    p.add_argument("--lfg-pairs", choices=("mouth", "random"), default=Budget.lfg_pairs)
    for stage in ("lfg", "pbnet", "a2v"):
        p.add_argument(f"--{stage}-minutes", type=float, default=None,
                       help=f"train {stage} for about this long (--{stage}-steps: a maximum)")  # fmt: skip
    p.add_argument("--a2v-tunes", nargs="*", type=Tune.parse, default=list(SHIPPED_TUNES),
                   metavar="STEPS:LR:BATCH:PROCS",
                   help="A2V-FDM warm restarts after a2v (the flag alone: none)")  # fmt: skip
    p.add_argument("--batch-scale", type=int, default=Budget.batch_scale,
                   help="multiply every stage's batch")  # fmt: skip
    p.add_argument("--loader-workers", type=int, default=Budget.loader_workers,
                   help="data-loading processes per training process (on a GPU)")  # fmt: skip
    p.add_argument("--val-every", type=int, default=1000, help="LFG held-out check every N steps")
    p.add_argument("--eval-clips", type=int, default=20, help="held-out clips to score")
    p.add_argument("--eval-steps", type=int, default=20, help="DDIM steps of the scored videos")
    p.add_argument("--eval-shards", type=int, default=4, help="evaluation processes")
    p.add_argument("--until", default=None, help="stop after this step")
    p.add_argument("--only", default=None, help="comma-separated steps (pose,blink beside an lfg)")
    p.add_argument("--stage", default=None, help=argparse.SUPPRESS)  # torchrun's / eval's entry
    args = p.parse_args(argv)
    if not args.stage:  # the parent: fit the processes to this machine's GPUs, once
        gpus = cuda_devices()
        args.a2v_tunes = [tune.on_gpus(gpus) for tune in args.a2v_tunes]
        args.procs = min(args.procs, gpus) if gpus else args.procs
    args.budget = Budget(
        args.lfg_steps, args.pbnet_steps, args.a2v_steps, args.lfg_pairs,
        args.lfg_minutes, args.pbnet_minutes, args.a2v_minutes, args.batch_scale,
        args.loader_workers, tuple(args.a2v_tunes),
    )  # fmt: skip
    steps = args.budget.steps()
    wanted = (args.only.split(",") if args.only else []) + ([args.until] if args.until else [])
    if not set(wanted) <= set(steps):
        p.error(f"--only and --until take steps among {', '.join(steps)}")
    args.work, args.model_dir = args.work.resolve(), args.model_dir.resolve()
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    budget = args.budget
    if args.stage and args.stage.startswith("eval:"):
        evaluate_shard(args, args.stage.removeprefix("eval:"))
        return 0
    if args.stage:
        run_training_stage(args.stage, args.work, budget, args.val_every)
        return 0
    args.work.mkdir(parents=True, exist_ok=True)
    say(f"demo model recipe in {args.work} ({args.procs} processes; budget {budget})")
    training = ("lfg", "pose", "blink", *budget.a2v_runs())
    actions = {
        "data": lambda: make_data(args.work),
        **{s: (lambda s=s: stage_torchrun(s, args)) for s in training},
        "export": lambda: export_model(args.work, args.model_dir, budget.a2v_runs()[-1]),
        "eval": lambda: evaluate(args),
    }
    only = set(args.only.split(",")) if args.only else None
    steps = [(name, actions[name]) for name in budget.steps()]
    run_steps(args.work, steps, until=args.until, only=only)
    return 0


if __name__ == "__main__":
    sys.exit(main())
