"""The one safe reader of PyTorch zip archives: tensors rebuilt, classes recorded or refused, nothing run."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

from talkinghead.torch_archive import (
    ANY_CLASS,
    ArchiveError,
    Opaque,
    read_archive,
    read_checkpoint,
    tensor_state_dict,
)


def test_views_of_one_storage_come_back_as_compact_tensors(tmp_path: Path) -> None:
    base = torch.arange(12, dtype=torch.float32)
    state = {"whole": base, "tail": base[4:], "grid": base.view(3, 4).t(), "half": base.half()}
    torch.save({"state_dict": state, "epoch": 3}, tmp_path / "a.ckpt")
    read = tensor_state_dict(read_checkpoint(tmp_path / "a.ckpt"))
    for name, tensor in state.items():
        assert torch.equal(read[name], tensor) and read[name].dtype == tensor.dtype
        assert read[name].untyped_storage().nbytes() == tensor.numel() * tensor.element_size()


def test_code_is_refused_or_recorded_never_run(tmp_path: Path) -> None:
    torch.save({"hook": os.system, "w": torch.ones(2)}, tmp_path / "evil.pt")
    with pytest.raises(ArchiveError, match=r"refers to (posix|nt)\.system.*refusing"):
        read_checkpoint(tmp_path / "evil.pt")
    read = read_archive(tmp_path / "evil.pt", ANY_CLASS)
    assert issubclass(read["hook"], Opaque) and read["hook"].qualname.endswith(".system")
    assert torch.equal(read["w"], torch.ones(2))
