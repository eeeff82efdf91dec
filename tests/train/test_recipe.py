"""Recipe steps: done markers make a re-run resume; failed steps run again; times add up."""

from __future__ import annotations

from pathlib import Path

import pytest

from talkinghead.train.recipe import read_times, run_step, run_steps


def test_a_done_step_is_skipped_and_a_failed_one_runs_again(tmp_path: Path) -> None:
    calls: list[str] = []

    def fail() -> None:
        calls.append("fail")
        raise RuntimeError("boom")

    assert run_step(tmp_path, "a", lambda: calls.append("a"))
    assert not run_step(tmp_path, "a", lambda: calls.append("a"))
    with pytest.raises(RuntimeError):
        run_step(tmp_path, "b", fail)
    assert not (tmp_path / "done" / "b").exists()
    assert run_step(tmp_path, "b", lambda: calls.append("b"))
    assert calls == ["a", "fail", "b"]
    times = read_times(tmp_path)
    assert set(times) == {"a", "b"} and all(t["wall_s"] >= 0 for t in times.values())


def test_run_steps_until_and_only(tmp_path: Path) -> None:
    calls: list[str] = []
    steps = [(n, lambda n=n: calls.append(n)) for n in ("data", "train", "eval")]
    run_steps(tmp_path, steps, until="train")
    assert calls == ["data", "train"]
    run_steps(tmp_path, steps, only={"eval"})
    run_steps(tmp_path, steps)  # everything done: nothing runs
    assert calls == ["data", "train", "eval"]
    with pytest.raises(ValueError, match="unknown step"):
        run_steps(tmp_path, steps, until="export")
