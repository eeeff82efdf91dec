"""The training loop shared by the three stages (LFG, PBNet, A2V-FDM), nanoGPT style.

A stage hands over a ``Task``: the network to train, the ``objective`` module whose forward turns a
batch into ``(loss, metrics)`` (it holds the network plus frozen helpers such as the LFG), and a
dataset. ``train`` then runs, top to bottom:

1. devices: ``torch.distributed`` from the torchrun/accelerate environment (``WORLD_SIZE``,
   ``RANK``, ``LOCAL_RANK``), gloo on CPU and nccl on CUDA; a single process otherwise;
2. resume: ``RUN_DIR/checkpoint.pt`` = {model, ema, optimizer, step, config, model_config, rng};
3. the loop: cosine LR, ``grad_accum`` micro-batches (DDP ``no_sync`` on all but the last), bf16
   autocast on CUDA, grad clipping, a skipped update on non-finite gradients (as the official
   stage-2 script), EMA update, JSONL log + tqdm on rank 0, preview callback, checkpoints.

Exact resume: all randomness is a pure function of ``(seed, rank, micro-batch index)``: the data
order (a seeded permutation per data-set pass, sharded over ranks), the per-item offsets of the
datasets (seeded per epoch and item), the step's ``torch.Generator`` handed to the objective
(noise, timesteps, augmentation) and the global RNG behind dropout (re-seeded every micro-batch).
A resumed run therefore computes the same next loss as one that was never stopped; the checkpoint
records the scheme under ``rng``. Ctrl-C / SIGTERM finish the current step, write a checkpoint and
stop; checkpoints are written to a temp file and renamed, so a kill never leaves a torn one.
``time_budget_min`` turns a wall-clock budget into the step count early in the run
(``train/time_budget.py``).
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import json
import logging
import math
import os
import signal
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, final

import torch
import torch.distributed as dist
from torch import Tensor, nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader, Dataset
from tqdm.auto import tqdm

from talkinghead.files import atomic_output
from talkinghead.train.config import TrainConfig
from talkinghead.train.data_order import EpochItems, ResumableBatchSampler, derive_seed, to_device
from talkinghead.train.time_budget import StepBudget

logger = logging.getLogger(__name__)

CHECKPOINT = "checkpoint.pt"
LOG_FILE = "log.jsonl"
SAMPLES_DIR = "samples"

Objective = nn.Module  # forward(batch: dict, generator: torch.Generator) -> (loss, {name: Tensor})


@dataclass
class Task:
    """What a stage gives the loop.

    Attributes:
        model: the network being trained (its state dict is what checkpoints and exports hold).
        objective: module holding ``model`` (+ frozen helpers); ``forward(batch, generator)``
            returns ``(loss: scalar Tensor, metrics: {name: scalar Tensor})``.
        dataset: map-style dataset of dict items; batches are collated with ``collate_fn``.
        model_config: JSON-able architecture (saved with every checkpoint).
        preview: ``preview(ema_model, step, samples_dir)`` writes sample previews (rank 0).
    """

    model: nn.Module
    objective: nn.Module
    dataset: Dataset
    model_config: dict[str, Any]
    collate_fn: Callable[[list[Any]], Any] | None = None
    preview: Callable[[nn.Module, int, Path], None] | None = None


@dataclass
class TrainResult:
    """What a call to ``train`` did (losses are this process's, one per optimiser step)."""

    step: int  # optimiser steps done in total (including earlier runs)
    losses: list[float] = field(default_factory=list)
    interrupted: bool = False
    run_dir: Path | None = None


# ------------------------------------------------------------------------------------ distributed


@dataclass(frozen=True)
class DistInfo:
    rank: int
    world_size: int
    local_rank: int
    device: torch.device

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def setup_distributed(device: str | None = None) -> DistInfo:
    """Join the process group described by the launcher's environment (or run alone)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank, local = int(os.environ.get("RANK", "0")), int(os.environ.get("LOCAL_RANK", "0"))
    if device is None:
        device = f"cuda:{local}" if torch.cuda.is_available() else "cpu"
    dev = torch.device(device)
    if dev.type == "cuda" and dev.index is not None:
        torch.cuda.set_device(dev)
    if world > 1 and not dist.is_initialized():
        dist.init_process_group(backend="nccl" if dev.type == "cuda" else "gloo")
    if dist.is_initialized():
        rank, world = dist.get_rank(), dist.get_world_size()
    return DistInfo(rank, world, local, dev)


@contextlib.contextmanager
def seeded(seed: int) -> Iterator[None]:
    """Run a block (network construction) on the global CPU RNG seeded with ``seed``, then put the
    caller's RNG state back: module constructors draw their initial weights from it."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(derive_seed(seed, 0x1417))
        yield


# ------------------------------------------------------------------------------- model utilities


def unwrap(model: nn.Module) -> nn.Module:
    """The module inside DDP / ``torch.compile`` wrappers."""
    while True:
        if isinstance(model, DistributedDataParallel):
            model = model.module
        elif hasattr(model, "_orig_mod"):
            model = model._orig_mod  # type: ignore[assignment]
        else:
            return model


@torch.no_grad()
def ema_update(ema: nn.Module, model: nn.Module, decay: float) -> None:
    """``ema = decay * ema + (1 - decay) * model`` for parameters; buffers are copied."""
    for e, p in zip(ema.parameters(), model.parameters(), strict=True):
        e.lerp_(p.detach(), 1.0 - decay)
    for e, b in zip(ema.buffers(), model.buffers(), strict=True):
        e.copy_(b)


def lr_at(cfg: TrainConfig, step: int) -> float:
    """Linear warm-up, then cosine decay from ``lr`` to ``lr_min`` at ``steps``."""
    assert cfg.lr is not None
    if step < cfg.warmup_steps:
        return cfg.lr * (step + 1) / cfg.warmup_steps
    span = max(1, cfg.steps - cfg.warmup_steps)
    progress = min(1.0, (step - cfg.warmup_steps) / span)
    return cfg.lr_min + 0.5 * (cfg.lr - cfg.lr_min) * (1 + math.cos(math.pi * progress))


def build_optimizer(cfg: TrainConfig, model: nn.Module) -> torch.optim.Optimizer:
    params = [p for p in model.parameters() if p.requires_grad]
    kwargs = {"lr": cfg.lr, "betas": cfg.betas, "weight_decay": cfg.weight_decay}
    if cfg.optimizer == "adamw":
        return torch.optim.AdamW(params, **kwargs)
    return torch.optim.Adam(params, **kwargs)


# -------------------------------------------------------------------------------------- checkpoints


def save_checkpoint(path: Path, payload: dict[str, Any]) -> None:
    """``torch.save`` to a temp file in the same folder, then rename: never a torn file."""
    with atomic_output(path) as tmp:
        torch.save(payload, tmp)


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """A checkpoint written by ``train`` (a run dir or the file itself)."""
    path = Path(path)
    if path.is_dir():
        path = path / CHECKPOINT
    if not path.is_file():
        raise ValueError(f"no training checkpoint at {path}")
    ckpt = torch.load(path, map_location=map_location, weights_only=True)
    missing = {"model", "ema", "optimizer", "step", "config"} - set(ckpt)
    if missing:
        raise ValueError(
            f"{path} is not a talkinghead training checkpoint (lacks {sorted(missing)})"
        )
    return ckpt


@final
class _StopFlag:
    """SIGINT/SIGTERM set a flag; the loop finishes its step, checkpoints and stops.

    A second Ctrl-C falls through to Python's default handler (KeyboardInterrupt right away).
    """

    def __init__(self) -> None:
        self.signum: int | None = None
        self._old: dict[int, Any] = {}

    def __enter__(self) -> _StopFlag:
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):
                self._old[sig] = signal.signal(sig, self._handle)
        return self

    def _handle(self, signum: int, frame: Any) -> None:
        self.signum = signum
        signal.signal(signal.SIGINT, signal.default_int_handler)

    def __exit__(self, *exc: object) -> None:
        for sig, old in self._old.items():
            signal.signal(sig, old)


# ------------------------------------------------------------------------------------------ train


def train(
    cfg: TrainConfig,
    task: Task,
    *,
    resume: bool = False,
    hooks: Sequence[Callable[[int, float], None]] = (),
) -> TrainResult:
    """Run (or continue) the optimisation described by ``cfg`` on ``task``.

    Args:
        cfg: a resolved ``TrainConfig``.
        task: network, objective and data of the stage.
        resume: continue from ``RUN_DIR/checkpoint.pt``; without it an existing checkpoint is an
            error (so a typo never overwrites a run).
        hooks: ``hook(step, loss)`` after every optimiser step (all ranks); raising
            ``KeyboardInterrupt`` there stops the run like Ctrl-C.
    Returns:
        ``TrainResult`` with this run's per-step losses.
    """
    cfg = cfg.resolve()
    info = setup_distributed(cfg.device)
    run_dir = Path(cfg.run_dir)
    ckpt_path = run_dir / CHECKPOINT
    if ckpt_path.exists() and not resume:
        raise ValueError(f"{run_dir} already holds a checkpoint; resume it or use a new run dir")
    if info.is_main:
        cfg.save(run_dir)

    model, objective = task.model, task.objective.to(info.device)
    ema = copy.deepcopy(model).requires_grad_(False).eval()
    optimizer = build_optimizer(cfg, model)
    step, budget_steps = 0, None
    if resume and ckpt_path.exists():
        ckpt = load_checkpoint(ckpt_path, info.device)
        model.load_state_dict(ckpt["model"])
        ema.load_state_dict(ckpt["ema"])
        optimizer.load_state_dict(ckpt["optimizer"])
        step, budget_steps = int(ckpt["step"]), ckpt.get("budget_steps")
        logger.info("resumed %s at step %d", run_dir, step)
    if budget_steps is not None:  # a time-budgeted run keeps the count it decided
        cfg = dataclasses.replace(cfg, steps=budget_steps)
    if info.world_size > 1:
        ids = [info.device.index] if info.device.type == "cuda" else None
        # The official UNet carries layers its forward never calls (the cross-attention blocks
        # inside final_conv / occlusion_map, kept so official checkpoints load): DDP must not wait
        # for their gradients.
        objective = DistributedDataParallel(objective, device_ids=ids, find_unused_parameters=True)

    use_bf16 = cfg.precision == "bf16" and info.device.type == "cuda"
    if cfg.precision == "bf16" and not use_bf16:
        logger.warning("bf16 autocast runs on CUDA only; training in fp32 on %s", info.device)
    sampler = ResumableBatchSampler(
        len(task.dataset),
        cfg.batch_size,
        seed=cfg.seed,
        rank=info.rank,  # type: ignore[arg-type]
        world_size=info.world_size,
        start=step * cfg.grad_accum,
    )
    loader = DataLoader(
        EpochItems(task.dataset),
        batch_sampler=sampler,
        collate_fn=task.collate_fn,
        num_workers=cfg.num_workers,
        pin_memory=info.device.type == "cuda",
    )
    batches = iter(loader)

    def payload(done: int) -> dict[str, Any]:
        return {
            "model": unwrap(model).state_dict(),
            "ema": ema.state_dict(),
            "optimizer": optimizer.state_dict(),
            "step": done,
            "config": cfg.to_dict(),
            "model_config": task.model_config,
            "rng": {"scheme": "per micro-batch: (seed, rank, index)", "seed": cfg.seed},
            "budget_steps": budget_steps,
        }

    result = TrainResult(step=step, run_dir=run_dir)
    log_file = run_dir / LOG_FILE
    bar = tqdm(
        total=cfg.steps,
        initial=step,
        disable=not (info.is_main and cfg.progress),
        desc=f"train {cfg.stage}",
        unit="step",
    )
    budget = None
    if cfg.time_budget_min is not None and budget_steps is None:
        budget = StepBudget(cfg.time_budget_min, cfg.steps, step)
    devices = [info.device] if info.device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices), _StopFlag() as stop:
        try:
            t_last = time.perf_counter()
            while step < cfg.steps:
                lr = lr_at(cfg, step)
                for group in optimizer.param_groups:
                    group["lr"] = lr
                objective.train()
                total = torch.zeros((), device=info.device)
                metrics: dict[str, Tensor] = {}
                for micro in range(cfg.grad_accum):
                    index = step * cfg.grad_accum + micro
                    torch.manual_seed(derive_seed(cfg.seed, info.rank, index, 0x61))  # dropout
                    gen = torch.Generator(info.device).manual_seed(
                        derive_seed(cfg.seed, info.rank, index)
                    )
                    batch = to_device(next(batches), info.device)
                    sync = micro == cfg.grad_accum - 1 or info.world_size == 1
                    ctx = contextlib.nullcontext() if sync else objective.no_sync()
                    with ctx, torch.autocast(info.device.type, torch.bfloat16, enabled=use_bf16):
                        loss, parts = objective(batch, gen)
                        (loss / cfg.grad_accum).backward()
                    total += loss.detach().float() / cfg.grad_accum
                    for k, v in parts.items():
                        metrics[k] = metrics.get(k, 0) + v.detach().float() / cfg.grad_accum
                clip = cfg.grad_clip if cfg.grad_clip else float("inf")
                norm = torch.nn.utils.clip_grad_norm_(
                    [p for p in model.parameters() if p.requires_grad], clip
                )
                if torch.isfinite(norm):
                    optimizer.step()
                else:
                    logger.warning("step %d: non-finite gradients, update skipped", step)
                optimizer.zero_grad(set_to_none=True)
                ema_update(ema, unwrap(model), min(cfg.ema_decay, (1 + step) / (10 + step)))
                step += 1
                decided = budget.after_step(step, info.world_size, info.device) if budget else None
                if decided is not None:
                    budget_steps = decided
                    cfg = dataclasses.replace(cfg, steps=decided)
                    bar.total = decided
                    bar.refresh()
                    if info.is_main:
                        cfg.save(run_dir)
                        logger.info("time budget: %d steps in %s", decided, run_dir)
                loss_value = float(total)
                result.losses.append(loss_value)
                result.step = step
                bar.update(1)
                if info.is_main and (step % cfg.log_every == 0 or step == cfg.steps):
                    now = time.perf_counter()
                    line = {
                        "step": step,
                        "loss": loss_value,
                        "lr": lr,
                        "grad_norm": float(norm),
                        **{k: float(v) for k, v in metrics.items()},
                        "sec_per_step": (now - t_last) / cfg.log_every,
                    }
                    t_last = now
                    with log_file.open("a") as f:
                        f.write(json.dumps(line) + "\n")
                    bar.set_postfix(loss=f"{loss_value:.4g}")
                if (
                    info.is_main
                    and task.preview
                    and cfg.sample_every
                    and step % cfg.sample_every == 0
                ):
                    with torch.no_grad():
                        task.preview(ema, step, run_dir / SAMPLES_DIR)
                if info.is_main and (step % cfg.ckpt_every == 0 or step == cfg.steps):
                    save_checkpoint(ckpt_path, payload(step))
                for hook in hooks:
                    hook(step, loss_value)
                if stop.signum is not None:
                    raise KeyboardInterrupt
        except KeyboardInterrupt:
            result.interrupted = True
            if info.is_main:
                save_checkpoint(ckpt_path, payload(step))
                logger.info("stopped at step %d; checkpoint in %s", step, ckpt_path)
            if stop.signum != signal.SIGTERM:
                raise
        finally:
            bar.close()
    if info.world_size > 1:
        dist.barrier()
    return result
