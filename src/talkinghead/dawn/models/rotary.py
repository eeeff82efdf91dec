"""Rotary position embedding (RoPE) with interleaved pairs on a leading slice of the features.

The one implementation used by both networks that rotate queries and keys: PBNet's attentions
(dawn_spec.md §2.2) and the A2V-FDM UNet's temporal attentions (§2.3.2, §4.1). Semantics of
``rotary-embedding-torch`` 0.3.5 (``RotaryEmbedding(dim).rotate_queries_or_keys``), which the official code
uses in both places (§7 item 17):

* frequencies ``f_k = 1 / theta ** (2k / dim)`` for ``k = 0 .. dim/2 - 1`` (``theta = 10000``);
* angle of feature pair ``k`` at position ``p`` is ``p * f_k``, each angle repeated for its two features;
* pairs are *interleaved*: features ``(x0, x1), (x2, x3), ...`` rotate together;
* only the first ``dim`` features of the last axis rotate; the rest pass through unchanged. The official PBNet
  builds ``RotaryEmbedding(min(32, heads))``, so with 4 heads only 4 of the 32 features per head rotate; the
  UNet builds ``RotaryEmbedding(min(32, dim_head))``.

The official module keeps its frequencies as a (non-trainable) parameter ``freqs`` that ends up in checkpoints;
here they are recomputed from ``dim`` (they are deterministic), so this module has no state. Angles are always
computed in float32 and only cos / sin are cast to the working dtype.

Two ways to use it: ``rotary(t)`` rotates one tensor; a caller that rotates many tensors of the same length
(the UNet's ten temporal layers) computes :meth:`RotaryEmbedding.cos_sin` once and calls :func:`apply_rotary`.
"""

from __future__ import annotations

import torch
from einops import rearrange, repeat
from torch import Tensor, nn


def rotary_frequencies(
    dim: int, theta: float = 10000.0, device: torch.device | None = None
) -> Tensor:
    """The ``dim // 2`` rotation frequencies, float32, shape ``(dim // 2,)``."""
    exponents = torch.arange(0, dim, 2, device=device)[: dim // 2].float() / dim
    return 1.0 / (theta**exponents)


def rotate_half(x: Tensor) -> Tensor:
    """Map each interleaved pair ``(a, b)`` to ``(-b, a)``; ``x: (..., d)`` with ``d`` even."""
    pairs = rearrange(x, "... (d r) -> ... d r", r=2)
    a, b = pairs.unbind(dim=-1)
    return rearrange(torch.stack((-b, a), dim=-1), "... d r -> ... (d r)")


def apply_rotary(t: Tensor, cos: Tensor, sin: Tensor, *, complex_form: bool = False) -> Tensor:
    """Rotate the first ``rot_dim`` features of ``t`` by precomputed angles.

    Args:
        t: (..., d) with ``d >= rot_dim``, e.g. (..., n, d) with the sequence axis second to last.
        cos, sin: (n, rot_dim) from :meth:`RotaryEmbedding.cos_sin`, or any shape ending in
            ``rot_dim`` that broadcasts against ``t[..., :rot_dim]`` (e.g. (n, 1, 1, rot_dim) for a
            sequence axis further left, to rotate q and k of a fused projection in one call).
        complex_form: turn each pair (a, b) as the complex number a + ib times cos + i sin: one
            pass instead of five, equal to float rounding but not bit for bit (the UNet's temporal
            attention, where it is 4-5x faster: benchmarks/RESULTS.md run 24). Off: the official
            arithmetic, bit for bit (PBNet, whose short sequences gain nothing).
    Returns:
        Tensor of the same shape as ``t``; features beyond ``rot_dim`` are unchanged.
    """
    rot = cos.shape[-1]
    if t.shape[-1] < rot:
        raise ValueError(f"cannot rotate {rot} features of a tensor with last axis {t.shape[-1]}.")
    head, tail = t[..., :rot], t[..., rot:]
    pairs = head.unflatten(-1, (-1, 2))
    if complex_form and _complex_applies(pairs):
        turn = torch.complex(cos[..., ::2], sin[..., ::2])
        head = torch.view_as_real(torch.view_as_complex(pairs) * turn).flatten(-2)
    else:
        head = head * cos + rotate_half(head) * sin
    return torch.cat((head, tail), dim=-1) if tail.shape[-1] else head


def _complex_applies(pairs: Tensor) -> bool:
    """Whether ``apply_rotary``'s complex form applies to ``pairs`` (..., 2): float32 or
    float64 (half precision has no complex multiply on every device), eager (a compiled graph fuses
    the real form, and complex views would break it), and ``torch.view_as_complex`` accepts the
    pairs without a copy."""
    return (
        pairs.dtype in (torch.float32, torch.float64)
        and not torch.compiler.is_compiling()
        and pairs.stride(-1) == 1
        and pairs.storage_offset() % 2 == 0
        and all(s % 2 == 0 for s in pairs.stride()[:-1])
    )


class RotaryEmbedding(nn.Module):
    """Stateless RoPE over the first ``dim`` features of the last axis.

    Args:
        dim: number of rotated features (even). Features beyond ``dim`` are left untouched.
        theta: frequency base.
    """

    def __init__(self, dim: int, theta: float = 10000.0) -> None:
        super().__init__()
        if dim <= 0 or dim % 2:
            raise ValueError(f"rotary dim={dim} must be a positive even number.")
        self.dim = dim
        self.theta = theta

    def angles(self, positions: Tensor) -> Tensor:
        """Rotation angles per position and rotated feature.

        Args:
            positions: (n,) positions (any numeric dtype; computed in float32).
        Returns:
            (n, dim) float32 angles, each pair's angle repeated twice (interleaved layout).
        """
        freqs = rotary_frequencies(self.dim, self.theta, device=positions.device)
        angles = positions.float()[:, None] * freqs  # -> (n, dim / 2)
        return repeat(angles, "n f -> n (f r)", r=2)

    def cos_sin(
        self,
        n: int | Tensor,
        *,
        device: torch.device | None = None,
        dtype: torch.dtype | None = None,
    ) -> tuple[Tensor, Tensor]:
        """cos and sin of the angles, each (n, dim), in ``dtype`` (default float32).

        Args:
            n: sequence length (positions ``0 .. n-1``) or a (n,) tensor of positions.
            device: where the tables live when ``n`` is an int.
        """
        positions = n if isinstance(n, Tensor) else torch.arange(n, device=device)
        angles = self.angles(positions)
        return angles.cos().to(dtype or angles.dtype), angles.sin().to(dtype or angles.dtype)

    def forward(self, t: Tensor, positions: Tensor | None = None) -> Tensor:
        """Rotate queries or keys.

        Args:
            t: (..., n, d) with ``d >= dim``; the sequence axis is the second to last.
            positions: (n,) positions of the ``n`` tokens; default ``0 .. n-1``.
        Returns:
            Tensor of the same shape and dtype as ``t``.
        """
        n = t.shape[-2]
        if positions is not None and positions.shape != (n,):
            raise ValueError(f"positions has shape {tuple(positions.shape)}, expected ({n},).")
        cos, sin = self.cos_sin(
            n if positions is None else positions, device=t.device, dtype=t.dtype
        )
        return apply_rotary(t, cos, sin)

    def extra_repr(self) -> str:
        return f"dim={self.dim}, theta={self.theta}"
