"""T5-style bucketed relative position bias for temporal attention, with an optional window mask.

The one implementation used by both networks: PBNet's attentions (dawn_spec.md §2.2 step 3) and the A2V-FDM
UNet's temporal attentions (§2.3.2, §4.1); the same construction as video-diffusion-pytorch's
``RelativePositionBias``. The offset ``j - i`` between query ``i`` and key ``j`` is mapped to one of
``num_buckets`` buckets (half per sign; the first half of each side exact, the rest log-spaced up to
``max_distance``, beyond which offsets share the last bucket) and each bucket has one learned scalar per head.
The bias only depends on the offset, so :meth:`RelativePositionBias.offset_table` (one column per offset) is
all an attention needs; :func:`dense_bias` expands it to the official (heads, n, n) matrix.

Window masks (``MASK_VALUE`` added where ``|j - i| > window``) come in the two forms the official code has:

* PBNet fixes its window at construction and masks **in eval mode only** (official ``|i - j| > 200``,
  dawn_spec.md §7 item 17): ``RelativePositionBias(..., window=200)`` puts the mask into the offset table
  (``window_eval_only=False`` applies it in training too).
* The UNet's window is a run-time option of its attention (§4.1): the module has ``window=None`` and the
  mask is added when the table is expanded, ``dense_bias(table, n, window)`` (or ``bias(n, window=...)``).

Adding ``-1e8`` (rather than ``-inf``) is kept because softmax then gives exactly zero weight in float32 while a
row can never be fully masked (``i == j`` is always inside the window).
"""

from __future__ import annotations

import math

import torch
from einops import rearrange
from torch import Tensor, nn

MASK_VALUE = -1e8  # added to the bias outside the window (official value)


def relative_position_bucket(
    relative_position: Tensor, num_buckets: int = 32, max_distance: int = 128
) -> Tensor:
    """Bucket index of each relative position ``j - i`` (int64, same shape).

    Positive and negative offsets use separate halves of the buckets. Matches the official integer results
    exactly (float32 log, truncation towards zero).
    """
    half = num_buckets // 2
    n = -relative_position
    side = (n < 0).long() * half
    n = n.abs()
    max_exact = half // 2
    is_small = n < max_exact
    # clamp only avoids log(0) on entries that take the exact branch anyway
    n_large = n.clamp(min=max(max_exact, 1)).float()
    val_if_large = (
        max_exact
        + (
            torch.log(n_large / max_exact) / math.log(max_distance / max_exact) * (half - max_exact)
        ).long()
    )
    val_if_large = val_if_large.clamp(max=half - 1)
    return side + torch.where(is_small, n, val_if_large)


class RelativePositionBias(nn.Module):
    """Learned per-head bias from bucketed relative positions.

    Args:
        heads: attention heads (one bias per head and bucket).
        num_buckets: number of buckets (both signs together).
        max_distance: offset at which buckets saturate.
        window: if set, add ``MASK_VALUE`` where ``|i - j| > window``.
        window_eval_only: apply the window mask only when the module is in eval mode (official PBNet).

    State: ``relative_attention_bias.weight`` of shape (num_buckets, heads).
    """

    def __init__(
        self,
        heads: int = 8,
        num_buckets: int = 32,
        max_distance: int = 128,
        window: int | None = None,
        window_eval_only: bool = True,
    ) -> None:
        super().__init__()
        if num_buckets < 4 or num_buckets % 2:
            raise ValueError(f"num_buckets={num_buckets} must be an even number >= 4.")
        if max_distance <= num_buckets // 4:
            raise ValueError(f"max_distance={max_distance} must exceed num_buckets // 4.")
        if window is not None and window < 0:
            raise ValueError(f"window={window} must be >= 0 or None.")
        self.heads = heads
        self.num_buckets = num_buckets
        self.max_distance = max_distance
        self.window = window
        self.window_eval_only = window_eval_only
        self.relative_attention_bias = nn.Embedding(num_buckets, heads)

    @property
    def masks_now(self) -> bool:
        """Whether the window mask is applied in the current mode."""
        return self.window is not None and (not self.window_eval_only or not self.training)

    def offset_table(self, max_offset: int, device: torch.device | None = None) -> Tensor:
        """Bias per relative offset ``j - i = -max_offset .. max_offset``, window mask included when active.

        Returns:
            (heads, 2 * max_offset + 1); column ``max_offset + r`` is the bias of offset ``r``.
        """
        if device is None:
            device = self.relative_attention_bias.weight.device
        offsets = torch.arange(-max_offset, max_offset + 1, dtype=torch.long, device=device)
        buckets = relative_position_bucket(offsets, self.num_buckets, self.max_distance)
        values = rearrange(self.relative_attention_bias(buckets), "r h -> h r")
        if self.masks_now:
            outside = offsets.abs() > self.window
            values = values + outside.to(values.dtype) * MASK_VALUE
        return values

    def forward(
        self, n: int, window: int | None = None, *, device: torch.device | None = None
    ) -> Tensor:
        """The official dense bias of a length-``n`` sequence attending to itself: (heads, n, n).

        ``window`` adds a run-time mask on top of the module's own (the UNet's form, see the module doc).
        """
        return dense_bias(self.offset_table(max(n - 1, 0), device), n, window)

    def extra_repr(self) -> str:
        return (
            f"heads={self.heads}, num_buckets={self.num_buckets}, max_distance={self.max_distance}, "
            f"window={self.window}, window_eval_only={self.window_eval_only}"
        )


def dense_bias(table: Tensor, n: int, window: int | None = None) -> Tensor:
    """Expand an offset table to (heads, n, n), adding ``MASK_VALUE`` where ``|j - i| > window``.

    Args:
        table: (heads, 2 * span + 1) as from ``offset_table(span)``; offsets beyond ``span`` take the
            edge column, which only ever happens where the window masks them (``span >= window``).
        n: sequence length; window: run-time mask half-width, None for none.
    """
    span = (table.shape[-1] - 1) // 2
    pos = torch.arange(n, device=table.device)
    rel = pos[None, :] - pos[:, None]  # (i, j) -> j - i
    bias = table[:, rel.clamp(-span, span) + span]
    if window is not None:
        bias = bias + (rel.abs() > window).to(bias.dtype) * MASK_VALUE
    return bias
