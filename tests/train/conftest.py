"""Fixtures of the training tests: one tiny synthetic data set per session, single-threaded torch."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

from talkinghead.data.synth.clips import write_synth_dataset


@pytest.fixture(scope="session")
def synth_data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """3 clips of 2 s (50 frames) at 32 px, all in the train split."""
    root = tmp_path_factory.mktemp("synth")
    write_synth_dataset(
        root,
        num_clips=3,
        seconds=2.0,
        resolution=32,
        seed=0,
        video=False,
        progress=False,
        test_fraction=0.0,
    )
    return root


@pytest.fixture(scope="session", autouse=True)
def one_thread() -> Iterator[None]:
    # tiny convolutions on a shared machine run ~50x faster without OpenMP thread contention
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
