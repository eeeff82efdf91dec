"""scripts/train_difftalk_small.py without training: the flags' budget and its stage configs."""

from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture(scope="module")
def recipe(load_script):
    return load_script("train_difftalk_small")


def test_step_counts_default_to_one_cpu_runs_and_minutes_alone_are_not_capped(recipe) -> None:
    budget = recipe.budget_from(recipe.parse_args([]))
    assert (budget.vq_steps, budget.denoiser_steps) == (4466, 7165)
    assert budget.denoiser_minutes is None
    # a wall-clock budget alone: the minutes decide, not the default count
    budget = recipe.budget_from(recipe.parse_args(["--denoiser-minutes", "50"]))
    assert budget.denoiser_steps == recipe.UNCAPPED and budget.vq_steps == 4466
    # both given: the count stays a maximum
    args = recipe.parse_args(["--denoiser-minutes", "50", "--denoiser-steps", "9000"])
    assert recipe.budget_from(args).denoiser_steps == 9000


def test_stage_configs_carry_the_budget_and_torchrun_children_rebuild_it(
    recipe, tmp_path: Path
) -> None:
    args = recipe.parse_args(
        ["--work", str(tmp_path), "--vq-minutes", "2", "--denoiser-batch", "4"]
    )
    budget = recipe.budget_from(args)
    vq = recipe.stage_config("vq", tmp_path, budget).resolve()
    denoiser = recipe.stage_config("denoiser", tmp_path, budget).resolve()
    assert (vq.stage, vq.steps, vq.time_budget_min) == ("difftalk-vq", recipe.UNCAPPED, 2.0)
    assert (denoiser.stage, denoiser.steps, denoiser.batch_size) == ("difftalk", 7165, 4)
    assert denoiser.first_stage == str(tmp_path / "vq_model")
    child = recipe.parse_args(recipe.common_flags(args))
    assert recipe.budget_from(child) == budget
