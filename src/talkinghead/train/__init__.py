"""Training DAWN's three stages (dawn_spec.md §5): LFG, PBNet and the A2V-FDM denoiser.

``TrainConfig`` (``config.py``) describes a run; ``loop.train`` is the shared loop (DDP, EMA,
gradient accumulation, bf16, exact resume, logs, previews); ``flow_ae``, ``pose_blink`` and
``diffusion`` each build their stage's ``Task`` and provide ``train_*`` and ``export``;
``export.py`` loads trained networks back and writes them into a model dir.
``run_stage`` and ``export_run`` dispatch on the stage name (the CLI uses them).
"""

from __future__ import annotations

from pathlib import Path

from talkinghead.train.config import STAGES, TrainConfig
from talkinghead.train.loop import TrainResult, load_checkpoint

__all__ = ["STAGES", "TrainConfig", "TrainResult", "export_run", "run_stage"]


def _stage_module(stage: str):
    if stage == "lfg":
        from talkinghead.dawn.training import lfg as module
    elif stage == "pbnet":
        from talkinghead.dawn.training import pbnet as module
    elif stage == "a2v":
        from talkinghead.dawn.training import a2v as module
    else:
        raise ValueError(f"stage={stage!r} must be one of {STAGES}")
    return module


def run_stage(cfg: TrainConfig, *, resume: bool = False, hooks=()) -> TrainResult:
    """Train (or resume) the stage named by ``cfg.stage``."""
    from talkinghead.train.loop import train

    cfg = cfg.resolve()
    return train(cfg, _stage_module(cfg.stage).build_task(cfg), resume=resume, hooks=hooks)


def export_run(run_dir: str | Path, model_dir: str | Path) -> list[Path]:
    """Write a run's EMA network(s) into ``model_dir`` (our model-dir format, ``hub``)."""
    stage = load_checkpoint(run_dir)["config"]["stage"]
    out = _stage_module(stage).export(run_dir, model_dir)
    return out if isinstance(out, list) else [out]
