"""scripts/train_demo_model.py without training: its stage configs are valid TrainConfigs, steps
skip on their done/ marker and add their time to times.json, bad --only lists are refused."""

from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture(scope="module")
def recipe(load_script):
    return load_script("train_demo_model")


def test_stage_configs(recipe, tmp_path: Path) -> None:
    budget = recipe.Budget()
    cfgs = {s: recipe.stage_config(s, tmp_path, budget).resolve() for s in recipe.STEPS[1:5]}
    assert cfgs["lfg"].lfg_pairs == "mouth" and cfgs["lfg"].lfg_mouth_region_weight > 0
    assert (cfgs["pose"].stage, cfgs["pose"].net, cfgs["blink"].net) == ("pbnet", "pose", "blink")
    assert cfgs["a2v"].a2v_reference == "open" and cfgs["a2v"].lfg == str(tmp_path / "lfg")
    assert {Path(c.run_dir).name for c in cfgs.values()} == {"lfg", "pose", "blink", "a2v"}


def test_only_names_known_steps(recipe, tmp_path: Path) -> None:
    # the done markers and times.json are train/recipe.py's (tests/train/test_recipe.py)
    args = recipe.parse_args(["--work", str(tmp_path), "--only", "export,eval"])
    assert args.work == tmp_path.resolve() and args.eval_shards == 4
    with pytest.raises(SystemExit):
        recipe.parse_args(["--only", "export,evaluate"])


def test_a2v_tunes_restart_from_the_run_before(recipe, tmp_path: Path) -> None:
    args = recipe.parse_args(["--work", str(tmp_path), "--a2v-tunes", "10:3e-4:8:1", "5:1e-4:2:2"])
    budget = args.budget
    assert budget.steps() == [
        "data", "lfg", "pose", "blink", "a2v", "a2v-tune1", "a2v-tune2", "export", "eval",
    ]  # fmt: skip
    second = recipe.stage_config("a2v-tune2", tmp_path, budget).resolve()
    assert (second.steps, second.lr, second.batch_size) == (5, 1e-4, 2)
    assert second.init_from == str(tmp_path / "a2v-tune1")
    assert second.run_dir == str(tmp_path / "a2v-tune2") and second.a2v_reference == "open"
    assert recipe.parse_args(["--a2v-tunes"]).budget.a2v_runs() == ["a2v"]
    flags = recipe.budget_flags(args)  # what the torchrun children rebuild the budget from
    assert recipe.parse_args(["--work", str(tmp_path), *flags]).budget == budget
    for bad in (["--a2v-tunes", "10:3e-4"], ["--until", "a2v-tune3"]):
        with pytest.raises(SystemExit):
            recipe.parse_args(["--work", str(tmp_path), *bad])


def test_tunes_fit_the_gpus(recipe) -> None:
    tune = recipe.Tune(100, 1e-4, 2, 2)
    assert tune.on_gpus(0) == tune and tune.on_gpus(2) == tune  # a CPU, or a GPU per process
    assert tune.on_gpus(1) == recipe.Tune(100, 1e-4, 4, 1)  # the same 4 clips a step
