"""Train for a wall-clock budget instead of a step count (``TrainConfig.time_budget_min``).

The cosine schedule needs its length up front, so the budget becomes a step count once, early:
the loop times ``PROBE_STEPS`` optimiser steps after ``SETTLE_STEPS`` (which absorb allocator and
kernel warm-up), then fixes ``steps = min(max_steps, done + remaining_time / seconds_per_step)``.
The learning rate of the steps before that point depends only on the warm-up, so with
``warmup_steps >= SETTLE_STEPS + PROBE_STEPS`` the schedule is exactly the one a run started with
that step count would follow. The decided count goes into every checkpoint (``budget_steps``), so
a resumed run keeps it instead of measuring again. Under DDP rank 0 decides for all ranks.
"""

from __future__ import annotations

import time

import torch
import torch.distributed as dist

SETTLE_STEPS = 5
PROBE_STEPS = 20


class StepBudget:
    """Turns a time budget into a step count from the measured speed of this run's first steps.

    Args:
        minutes: the budget for the whole run, counted from construction (the loop's start).
        max_steps: the count is never more than this (``TrainConfig.steps``).
        start_step: the step a resumed run starts from (its earlier time is not known: the budget
            then covers the remaining steps).
    """

    def __init__(self, minutes: float, max_steps: int, start_step: int = 0) -> None:
        self.deadline = time.perf_counter() + 60.0 * minutes
        self.max_steps = max_steps
        self.probe_from = start_step + SETTLE_STEPS
        self.probe_to = self.probe_from + PROBE_STEPS
        self._t_probe = 0.0

    def after_step(
        self, step: int, world_size: int = 1, device: torch.device | str = "cpu"
    ) -> int | None:
        """Call after each optimiser step (``step`` = steps done); the decided count, once.
        ``device``: this rank's, where the collective that shares rank 0's count runs."""
        now = time.perf_counter()
        if step == self.probe_from:
            self._t_probe = now
        if step != self.probe_to:
            return None
        per_step = (now - self._t_probe) / PROBE_STEPS
        steps = min(self.max_steps, step + max(0, int((self.deadline - now) / per_step)))
        if world_size > 1:  # every rank must stop at the same step
            shared = torch.tensor([steps], dtype=torch.int64, device=device)
            dist.broadcast(shared, src=0)
            steps = int(shared.item())
        return max(steps, step)
