"""Local (banded) temporal attention == the official dense attention with a -1e8 band mask."""

from __future__ import annotations

import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode

from talkinghead.dawn.models.local_attention import (
    local_attention,
    reference_local_attention,
)

HEADS, DIM_HEAD = 4, 8


def _qkv(n: int, seed: int = 0, batch: int = 3) -> tuple[torch.Tensor, ...]:
    g = torch.Generator().manual_seed(seed)
    return tuple(torch.randn(batch, HEADS, n, DIM_HEAD, generator=g) for _ in range(3))


def _table(span: int, seed: int = 1) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(HEADS, 2 * span + 1, generator=g)


@pytest.mark.parametrize("n", [1, 5, 40, 41, 48, 100, 130])
@pytest.mark.parametrize("window", [3, 40])
def test_local_matches_reference(n: int, window: int) -> None:
    q, k, v = _qkv(n)
    table = _table(max(n - 1, 0))
    ref = reference_local_attention(q, k, v, table, window)
    out = local_attention(q, k, v, table, window)
    torch.testing.assert_close(out, ref, atol=1e-5, rtol=0)


@pytest.mark.parametrize("block_size", [1, 7, 64])
def test_block_sizes_and_short_table(block_size: int) -> None:
    n, window = 50, 6
    q, k, v = _qkv(n, seed=2, batch=1)
    full_table = _table(n - 1)
    short = full_table[:, n - 1 - window : n + window]  # only offsets -window..window
    ref = reference_local_attention(q, k, v, full_table, window)
    out = local_attention(q, k, v, short, window, block_size=block_size)
    torch.testing.assert_close(out, ref, atol=1e-5, rtol=0)


def test_window_none_is_full_attention() -> None:
    q, k, v = _qkv(9)
    table = _table(8)
    ref = reference_local_attention(q, k, v, table, None)
    expected = (q @ k.transpose(-1, -2) + reference_bias(table, 9)).softmax(-1) @ v
    torch.testing.assert_close(local_attention(q, k, v, table, None), ref)
    torch.testing.assert_close(ref, expected, atol=1e-5, rtol=0)


def reference_bias(table: torch.Tensor, n: int) -> torch.Tensor:
    span = (table.shape[-1] - 1) // 2
    return torch.stack(
        [torch.stack([table[:, j - i + span] for j in range(n)], -1) for i in range(n)], -2
    )


def test_gradients_match() -> None:
    n, window = 23, 4
    q, k, v = (t.requires_grad_() for t in _qkv(n, seed=3, batch=2))
    table = _table(n - 1).requires_grad_()
    grads = []
    for fn in (reference_local_attention, local_attention):
        out = fn(q, k, v, table, window)
        grads.append(torch.autograd.grad((out * out.detach().cos()).sum(), (q, k, v, table)))
    for a, b in zip(*grads):
        assert torch.isfinite(b).all()
        torch.testing.assert_close(b, a, atol=1e-5, rtol=1e-5)


class _LargestTensor(TorchDispatchMode):
    """Records the element count of the largest tensor any op produces."""

    def __init__(self) -> None:
        super().__init__()
        self.largest = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):  # type: ignore[override]
        out = func(*args, **(kwargs or {}))
        for t in out if isinstance(out, (tuple, list)) else (out,):
            if isinstance(t, torch.Tensor):
                self.largest = max(self.largest, t.numel())
        return out


def test_memory_is_linear_in_frames() -> None:
    window, batch = 8, 1
    largest = {}
    for n in (200, 400):
        q, k, v = _qkv(n, batch=batch)
        table = _table(window)
        with _LargestTensor() as rec:
            local_attention(q, k, v, table, window)
        largest[n] = rec.largest
        # logits per (sequence, head, query): block + 2 * window keys, block = window
        assert rec.largest <= batch * HEADS * (n + window) * 3 * window
        assert rec.largest < batch * HEADS * n * n // 4
    assert largest[400] <= 2.1 * largest[200]  # linear, not quadratic
