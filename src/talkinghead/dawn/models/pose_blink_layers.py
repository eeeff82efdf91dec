"""PBNet's transformer pieces: rotary attention with a relative position bias, the FFN, the decoder layers.

The official ``Decoder_TRANSFORMERREEMB5`` (dawn_spec.md §2.2) builds its decoder from these: a pre-norm
rotary self-attention in front (assembled in ``pose_blink_cvae.PoseBlinkDecoder``), then ``num_layers``
post-norm ``DecoderLayer``s (self-attention, cross-attention to the memory, GELU FFN). Attribute names
are the official ones, so state-dict keys match the official checkpoints. ``sinusoidal_positions`` is
the encoder's ``PositionalEncoding`` table.
"""

from __future__ import annotations

import math

import torch
from einops import rearrange
from torch import Tensor, nn
from torch.nn import functional as F

from talkinghead.dawn.configs import PoseBlinkConfig
from talkinghead.dawn.models.local_attention import dense_attention, local_attention
from talkinghead.dawn.models.rotary import RotaryEmbedding


def sinusoidal_positions(length: int, dim: int, device: torch.device | None = None) -> Tensor:
    """Official ``PositionalEncoding`` table rows ``0 .. length-1``: (length, dim) float32.

    ``pe[:, 0::2] = sin(p * div)``, ``pe[:, 1::2] = cos(p * div)``, ``div = exp(-ln(10000) * 2k / dim)``,
    computed with the same float32 operations so the first ``length`` rows are bit-identical.
    """
    position = torch.arange(0, length, dtype=torch.float, device=device)[:, None]
    div_term = torch.exp(
        torch.arange(0, dim, 2, device=device).float() * (-math.log(10000.0) / dim)
    )
    pe = torch.zeros(length, dim, device=device)
    pe[:, 0::2] = torch.sin(position * div_term)
    pe[:, 1::2] = torch.cos(position * div_term)
    return pe


class RotaryAttention(nn.Module):
    """Multi-head attention with rotary q/k, scaled queries and an additive relative position bias.

    ``fused_qkv=True`` is the official self-attention (``to_qkv``); ``False`` the cross-attention
    (``to_q``/``to_k``/``to_v``). Inputs (B, n, dim) -> (B, n, dim); queries and keys share positions 0..n-1.
    """

    def __init__(
        self, dim: int, heads: int, dim_head: int, rotary: RotaryEmbedding, fused_qkv: bool
    ):
        super().__init__()
        self.heads, self.scale = heads, dim_head**-0.5
        hidden = heads * dim_head
        if fused_qkv:
            self.to_qkv = nn.Linear(dim, hidden * 3, bias=False)
        else:
            self.to_q = nn.Linear(dim, hidden, bias=False)
            self.to_k = nn.Linear(dim, hidden, bias=False)
            self.to_v = nn.Linear(dim, hidden, bias=False)
        self.to_out = nn.Linear(hidden, dim, bias=False)
        self.fused_qkv = fused_qkv
        self.rotary_emb = rotary  # stateless (shared), so it adds no state-dict keys

    def forward(
        self, x: Tensor, memory: Tensor | None, bias: Tensor, band: tuple[int, int | None] | None
    ) -> Tensor:
        """x, memory: (B, n, dim); bias: (h, n, n), or an offset table (h, 2 * window + 1) when
        ``band = (window, chunk)`` selects the banded path (:func:`.local_attention.local_attention`)."""
        if self.fused_qkv:
            q, k, v = self.to_qkv(x).chunk(3, dim=-1)
        else:
            q, k, v = self.to_q(x), self.to_k(memory), self.to_v(memory)
        q, k, v = (rearrange(t, "b n (h d) -> b h n d", h=self.heads) for t in (q, k, v))
        q, k = self.rotary_emb(q * self.scale), self.rotary_emb(k)
        if band is None:
            out = dense_attention(q, k, v, bias)
        else:
            out = local_attention(q, k, v, bias, band[0], block_size=band[1])
        return self.to_out(rearrange(out, "b h n d -> b n (h d)"))


class FeedForward(nn.Module):
    def __init__(self, dim: int, hidden: int, dropout: float) -> None:
        super().__init__()
        self.linear1, self.linear2 = nn.Linear(dim, hidden), nn.Linear(hidden, dim)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: Tensor) -> Tensor:
        return self.linear2(self.dropout(F.gelu(self.linear1(x))))


class DecoderLayer(nn.Module):
    """Post-norm layer: self-attention, cross-attention to the memory, FFN (official ``DecoderLayer``)."""

    def __init__(self, cfg: PoseBlinkConfig, rotary: RotaryEmbedding) -> None:
        super().__init__()
        d = cfg.pose_latent_dim
        self.self_attn = RotaryAttention(d, cfg.num_heads, cfg.dim_head, rotary, fused_qkv=True)
        self.multihead_attn = RotaryAttention(
            d, cfg.num_heads, cfg.dim_head, rotary, fused_qkv=False
        )
        self.ffn = FeedForward(d, cfg.ff_size, cfg.dropout)
        self.layer_norm1, self.layer_norm2, self.layer_norm3 = (nn.LayerNorm(d) for _ in range(3))
        self.dropout = nn.Dropout(cfg.dropout)

    def forward(
        self,
        tgt: Tensor,
        memory: Tensor,
        bias_tgt: Tensor,
        bias_mem: Tensor,
        band: tuple[int, int | None] | None,
    ) -> Tensor:
        tgt = self.layer_norm1(tgt + self.dropout(self.self_attn(tgt, None, bias_tgt, band)))
        tgt = self.layer_norm2(tgt + self.dropout(self.multihead_attn(tgt, memory, bias_mem, band)))
        return self.layer_norm3(tgt + self.dropout(self.ffn(tgt)))


class DecoderStack(nn.Module):
    """Holds ``decoder_layers`` (official ``TransformerDecoder``; the key prefix is ``seqTransDecoder``)."""

    def __init__(self, cfg: PoseBlinkConfig, rotary: RotaryEmbedding) -> None:
        super().__init__()
        self.decoder_layers = nn.ModuleList(
            DecoderLayer(cfg, rotary) for _ in range(cfg.num_layers)
        )
