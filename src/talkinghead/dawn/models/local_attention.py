"""Windowed (local) temporal attention with T5-style relative bias and rotary positions.

A2V-FDM attends over the frames of every pixel with a centred window (dawn_spec.md §4.1):

    out_i = softmax_j( R(q_i) . R(k_j) + B[bucket(j - i)] + M(i, j) ) v_j

with R the rotary embedding (§2.3.2, :mod:`.rotary`, applied by the caller), B a learned per-head
bias over bucketed relative distances shared by all temporal layers (:mod:`.relative_position`), and
M(i, j) = -1e8 when |j - i| > window (official inference code).

Two implementations of the same math:

* :func:`reference_local_attention` materialises the full (F, F) logits with the -1e8 band mask,
  exactly like the official O(F^2) code (§4.2), with the official arithmetic
  (:func:`dense_attention`). Used in tests as the oracle.
* :func:`local_attention` splits queries into blocks of ``block_size`` frames; each block attends
  only to the keys ``[start - window, end + window)`` (clipped to the sequence), so the logits are
  (F, block_size + 2 * window) instead of (F, F): memory O(F * window) (§4.3).

The UNet's attentions (banded, and dense through :func:`fused_attention`) run
:func:`torch.nn.functional.scaled_dot_product_attention` on 4-D (batch, heads, n, d) views with a
mask that broadcasts over the batch, the one form that PyTorch's fused CPU flash kernel takes (5-D
or 3-D inputs fall back to the math kernel, which materialises the logits and makes several passes
over them: it was half the UNet's CPU time, issue #15). The banded path calls the kernel once per
query block on strided views of q, k and v, so nothing is padded, unfolded or copied. When the mask
needs a gradient (training the relative bias) PyTorch takes its math kernel by itself, with the same
result. The output comes back as a (..., heads, n, d) view of a (..., n, heads, d) buffer, so
merging the heads afterwards (``... h n d -> ... n (h d)``) is free. The fused kernel sums in
another order than the official formula: outputs agree to float32 rounding, not bit for bit.

PBNet's attentions reuse them in eval mode, where the official code masks ``|j - i| > 200``:
:func:`dense_attention` (the official arithmetic, so PBNet's pose and blink keep the official
rounding; PBNet's cost is negligible next to the UNet's) for short sequences, :func:`local_attention`
beyond ``FULL_ATTENTION_MAX_FRAMES``.

Both take ``bias_table``: (heads, 2 * span + 1), column ``c`` holding the bias of relative offset
``j - i = c - span`` (built by :meth:`.relative_position.RelativePositionBias.offset_table`); the bias only depends on
the offset, so the table is all either path needs.
"""

from __future__ import annotations

from collections.abc import Iterator

import torch
from torch import Tensor, nn

from talkinghead.dawn.models.relative_position import dense_bias


def _check(q: Tensor, k: Tensor, v: Tensor, bias_table: Tensor, window: int | None) -> int:
    if q.shape != k.shape or k.shape[:-1] != v.shape[:-1]:
        raise ValueError(f"q {tuple(q.shape)}, k {tuple(k.shape)}, v {tuple(v.shape)} do not match")
    if q.dim() < 3 or bias_table.dim() != 2 or bias_table.shape[0] != q.shape[-3]:
        raise ValueError(
            f"expected q (..., heads, n, d) and bias_table (heads, 2*span+1); got q {tuple(q.shape)}, "
            f"bias_table {tuple(bias_table.shape)}"
        )
    if window is not None and window < 0:
        raise ValueError(f"window={window} must be >= 0 (or None for no window)")
    n = q.shape[-2]
    need = n - 1 if window is None else min(window, n - 1)
    span = (bias_table.shape[-1] - 1) // 2
    if span < need:
        raise ValueError(f"bias_table covers offsets +-{span}, attention needs +-{need}")
    return n


def reference_local_attention(
    q: Tensor, k: Tensor, v: Tensor, bias_table: Tensor, window: int | None
) -> Tensor:
    """Dense O(n^2) attention with the -1e8 band mask, as the official code computes it.

    Args:
        q, k, v: (..., heads, n, d), q already scaled and both rotated.
        bias_table: (heads, 2 * span + 1) relative bias, span >= min(window, n - 1).
        window: keys with |j - i| > window are masked; None attends to all frames.
    Returns:
        (..., heads, n, d)
    """
    n = _check(q, k, v, bias_table, window)
    return dense_attention(q, k, v, dense_bias(bias_table, n, window))


def dense_attention(q: Tensor, k: Tensor, v: Tensor, bias: Tensor) -> Tensor:
    """softmax(q k^T + bias) v with the official max subtraction; bias: (heads, n, n).

    The official arithmetic (logits materialised): PBNet's short sequences and the tests' oracle.
    """
    sim = torch.einsum("...id,...jd->...ij", q, k) + bias
    sim = sim - sim.amax(dim=-1, keepdim=True).detach()
    return torch.einsum("...ij,...jd->...id", sim.softmax(dim=-1), v)


def _batched(t: Tensor) -> Tensor:
    """(..., heads, n, d) -> (B, heads, n, d): a view whenever the leading dims merge (always for
    the UNet's and PBNet's layouts)."""
    return t.reshape(-1, *t.shape[-3:])


def fused_attention(q: Tensor, k: Tensor, v: Tensor, bias: Tensor, *, scale: float = 1.0) -> Tensor:
    """softmax(scale * q k^T + bias) v through the fused kernel; q, k, v: (..., heads, n, d), bias:
    (heads, n, n).

    The official code subtracts the row maximum before its softmax; the kernel's online softmax
    does the same, so the result is that of :func:`dense_attention` to float rounding.
    """
    out = nn.functional.scaled_dot_product_attention(
        _batched(q), _batched(k), _batched(v), attn_mask=bias.to(q.dtype)[None], scale=scale
    )
    return out.reshape(q.shape[:-1] + v.shape[-1:])


def default_block_size(n: int, window: int) -> int:
    """Query block length: ``n`` split into equal blocks of about ``window`` frames (at most 64).

    Each block computes ``B + 2 * window`` logits per query, so blocks near the window that divide
    ``n`` evenly waste the least: measured at n=200, window=40 (2 threads): B=40 (5 blocks) 0.83 s
    against 0.93 s with blocks of 32, 0.90 s with 20 and 0.97 s with 100 per layer call. Outputs
    agree to float rounding for any B.
    """
    target = min(max(window, 1), 64)
    blocks = max(1, round(n / target))
    return -(-n // blocks)


def local_attention(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    bias_table: Tensor,
    window: int | None,
    *,
    block_size: int | None = None,
    scale: float = 1.0,
) -> Tensor:
    """Banded attention, same result as :func:`reference_local_attention` in O(n * window) memory.

    Queries are cut into blocks of ``block_size`` frames (default :func:`default_block_size`); block
    ``[s, e)`` attends to the keys ``[max(s - window, 0), min(e + window, n))`` with one additive mask
    (bias of each offset, and the band ``|j - i| <= window``) that every block slices and the fused
    kernel broadcasts over the batch.

    Args: as :func:`reference_local_attention`; ``block_size`` > 0 trades memory for batching;
        ``scale``: factor of q . k (1.0 when q is already scaled), applied inside the kernel.
    Returns:
        (..., heads, n, d), a view of a (..., n, heads, d) buffer.
    """
    n = _check(q, k, v, bias_table, window)
    if block_size is not None and block_size < 1:
        raise ValueError(f"block_size={block_size} must be >= 1")
    bq = banded_block_size(n, window, block_size)
    if bq is None or window is None:
        # a block would see (nearly) every key: the dense band-masked logits are no larger
        full = window is None or n <= window + 1
        bias = dense_bias(bias_table, n, None if full else window)
        return fused_attention(q, k, v, bias, scale=scale)
    mask = band_mask(bias_table, window, bq, q.dtype)
    out = torch.cat(list(banded_blocks(q, k, v, mask, window, scale=scale)), dim=1)
    return out.transpose(1, 2).reshape(q.shape[:-1] + v.shape[-1:])


def banded_block_size(n: int, window: int | None, block_size: int | None = None) -> int | None:
    """Query block length of the banded path for ``n`` frames, or None when the dense path is no
    larger (every pair inside the window, or one block would see every key)."""
    if window is None or n <= window + 1:
        return None
    bq = block_size if block_size is not None else default_block_size(n, window)
    return None if n <= bq + 2 * window else bq


def band_mask(bias_table: Tensor, window: int, block_size: int, dtype: torch.dtype) -> Tensor:
    """Additive mask of a query block: (1, heads, block_size, block_size + 2 * window).

    Entry (i, c) is the bias of offset ``c - i - window`` (query i of the block, key c of its
    window ``[s - window, s + block_size + window)``), or a large negative value outside the band.
    """
    w, bq = window, block_size
    span = (bias_table.shape[-1] - 1) // 2
    device = bias_table.device
    rel = (
        torch.arange(bq + 2 * w, device=device)[None, :] - torch.arange(bq, device=device)[:, None]
    )
    rel = rel - w
    mask = bias_table[:, rel.clamp(-w, w) + span].to(dtype)
    return mask.masked_fill(rel.abs() > w, torch.finfo(dtype).min / 2)[None]


def banded_blocks(
    q: Tensor, k: Tensor, v: Tensor, mask: Tensor, window: int, *, scale: float = 1.0
) -> Iterator[Tensor]:
    """The banded attention's output, one query block at a time.

    Args:
        q, k, v: (..., heads, n, d); mask: :func:`band_mask` (its block length is the block size).
    Yields:
        (B, e - s, heads, d) for the queries ``[s, e)`` of each block in order, B the product of
        the leading dims: concatenated along dim 1 they are the attention output, n-major.
    """
    n, w, bq = q.shape[-2], window, mask.shape[-2]
    qb, kb, vb = _batched(q), _batched(k), _batched(v)
    for s in range(0, n, bq):
        e, ks, ke = min(s + bq, n), max(s - w, 0), min(s + bq + w, n)
        out = nn.functional.scaled_dot_product_attention(
            qb[:, :, s:e],
            kb[:, :, ks:ke],
            vb[:, :, ks:ke],
            attn_mask=mask[:, :, : e - s, ks - s + w : ke - s + w],
            scale=scale,
        )
        yield out.transpose(1, 2)  # contiguous: the fused kernel writes (B, n, heads, d)
