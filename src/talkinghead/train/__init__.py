"""Training any family's networks through one loop; DAWN's stages are lfg, pbnet and a2v (dawn_spec.md §5).

``TrainConfig`` (``config.py``) describes a run; ``loop.train`` is the shared loop (DDP, EMA,
gradient accumulation, bf16, exact resume, logs, previews); each family's training modules
(``families.Family.training``, e.g. ``dawn/training/lfg.py``) build their stage's ``Task`` and provide
``export`` (the run's EMA networks into a model directory). ``run_stage`` and ``export_run`` dispatch on the stage name (the CLI uses them).
"""

from __future__ import annotations

import importlib
from pathlib import Path

from talkinghead.families import training_stages
from talkinghead.train.config import TrainConfig
from talkinghead.train.loop import TrainResult, load_checkpoint

__all__ = ["TrainConfig", "TrainResult", "export_run", "run_stage"]


def _stage_module(stage: str):
    stages = training_stages()
    if stage not in stages:
        raise ValueError(f"stage={stage!r} must be one of {', '.join(stages)}")
    return importlib.import_module(stages[stage])


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
