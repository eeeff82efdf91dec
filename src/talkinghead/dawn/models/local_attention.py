"""Windowed (local) temporal attention with T5-style relative bias and rotary positions.

A2V-FDM attends over the frames of every pixel with a centred window (dawn_spec.md §4.1):

    out_i = softmax_j( R(q_i) . R(k_j) + B[bucket(j - i)] + M(i, j) ) v_j

with R the rotary embedding (§2.3.2, :mod:`.rotary`, applied by the caller), B a learned per-head
bias over bucketed relative distances shared by all temporal layers (:mod:`.relative_position`), and
M(i, j) = -1e8 when |j - i| > window (official inference code).

Two implementations of the same math:

* :func:`reference_local_attention` materialises the full (F, F) logits with the -1e8 band mask,
  exactly like the official O(F^2) code (§4.2). Used as the faithful mode and in tests.
* :func:`local_attention` splits queries into blocks of ``block_size`` frames; each block attends
  only to the keys ``[start - window, end + window)``, so the logits are
  (F, block_size + 2 * window) instead of (F, F): memory O(F * window) (§4.3, done without loops).

PBNet's attentions reuse both in eval mode, where the official code masks ``|j - i| > 200``
(dense_attention for short sequences, local_attention beyond ``FULL_ATTENTION_MAX_FRAMES``).

Both take ``bias_table``: (heads, 2 * span + 1), column ``c`` holding the bias of relative offset
``j - i = c - span`` (built by :meth:`.relative_position.RelativePositionBias.offset_table`); the bias only depends on
the offset, so the table is all either path needs.
"""

from __future__ import annotations

import torch
from einops import rearrange
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
    """softmax(q k^T + bias) v with the official max subtraction; bias: (heads, n, n)."""
    sim = torch.einsum("...id,...jd->...ij", q, k) + bias
    sim = sim - sim.amax(dim=-1, keepdim=True).detach()
    return torch.einsum("...ij,...jd->...id", sim.softmax(dim=-1), v)


def default_block_size(n: int, window: int) -> int:
    """Query block length: ``n`` split into equal blocks of about ``window`` frames (at most 64).

    Each block computes ``B + 2 * window`` logits per query and ``n`` is padded to a multiple of B, so
    blocks near the window that divide ``n`` evenly waste the least; measured at n=200, window=40
    (SDPA on CPU, 2 threads): B=40 (5 blocks, no padding) 0.83 s vs the former B=32 (224 padded
    frames) 0.93 s per layer call, B=20 0.90 s, B=100 0.97 s. Outputs are identical for any B.
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
) -> Tensor:
    """Banded attention, same result as :func:`reference_local_attention` in O(n * window) memory.

    Queries are cut into blocks of ``block_size`` frames (default :func:`default_block_size`); block
    ``[s, s + B)`` attends to keys ``[s - window, s + B + window)`` (zero-padded at the borders and
    masked there), so the logits have shape (..., heads, n_blocks, B, B + 2 * window).

    Args: as :func:`reference_local_attention`; ``block_size`` > 0 trades memory for batching.
    Returns:
        (..., heads, n, d)
    """
    n = _check(q, k, v, bias_table, window)
    if window is None or n <= window + 1:
        # every pair of frames is inside the window: plain full attention, n^2 <= n * (window + 1)
        return reference_local_attention(q, k, v, bias_table, None)
    w = window
    bq = block_size if block_size is not None else default_block_size(n, w)
    if bq < 1:
        raise ValueError(f"block_size={bq} must be >= 1")
    if n <= bq + 2 * w:
        # a block would see every key anyway: the dense band-masked logits are no larger
        return reference_local_attention(q, k, v, bias_table, w)
    nb = -(-n // bq)
    n_pad = nb * bq
    kb_len = bq + 2 * w
    pad = (0, 0, w, n_pad - n + w)
    qb = rearrange(nn.functional.pad(q, (0, 0, 0, n_pad - n)), "... (b i) d -> ... b i d", i=bq)
    kb = nn.functional.pad(k, pad).unfold(-2, kb_len, bq).transpose(-1, -2)  # (..., nb, kb_len, d)
    vb = nn.functional.pad(v, pad).unfold(-2, kb_len, bq).transpose(-1, -2)

    span = (bias_table.shape[-1] - 1) // 2
    device = q.device
    rel = (
        torch.arange(kb_len, device=device)[None, :] - torch.arange(bq, device=device)[:, None] - w
    )
    in_window = rel.abs() <= w  # (bq, kb_len); the same for every block
    key_pos = (
        torch.arange(nb, device=device)[:, None] * bq - w + torch.arange(kb_len, device=device)
    )
    key_ok = (key_pos >= 0) & (key_pos < n)  # (nb, kb_len): padding keys at the borders
    keep = in_window[None] & key_ok[:, None, :]  # (nb, bq, kb_len)
    heads = bias_table.shape[0]
    # bias + band + border mask as one additive mask: the fused SDPA kernel never materialises the
    # logits (saves their add / mask / softmax passes and two layout copies); a finite fill keeps
    # padded query rows NaN-free
    mask = bias_table[:, rel.clamp(-w, w) + span].to(q.dtype)[:, None].expand(heads, nb, bq, kb_len)
    mask = mask.masked_fill(~keep, torch.finfo(q.dtype).min / 2)
    out = nn.functional.scaled_dot_product_attention(qb, kb, vb, attn_mask=mask, scale=1.0)
    return rearrange(out, "... b i d -> ... (b i) d")[..., :n, :]
