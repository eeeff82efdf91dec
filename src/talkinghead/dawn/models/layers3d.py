"""Building blocks of the A2V-FDM 3D UNet (dawn_spec.md §2.3.2).

Module and parameter names follow the official ``video-diffusion-pytorch``-derived code so the
official ``denoise_fn.*`` state dict loads unchanged: ``Residual(PreNorm(...))`` wrappers with
``.fn`` / ``.norm.gamma``, ``ResnetBlock`` = the official ``ResnetBlock_ca_mul`` (time scale/shift +
three per-frame condition cross-attentions), ``Block``, ``CrossAttention``, ``SpatialLinearAttention``.

Layout: video tensors are (B, C, F, H, W) throughout.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import Tensor, nn

from talkinghead.dawn.models.local_attention import dense_attention, local_attention
from talkinghead.dawn.models.rotary import apply_rotary

ATTENTION_MODES = ("local", "full")


class Residual(nn.Module):
    """x + fn(x)."""

    def __init__(self, fn: nn.Module) -> None:
        super().__init__()
        self.fn = fn

    def forward(self, x: Tensor, **kwargs: object) -> Tensor:
        return self.fn(x, **kwargs) + x


class ChannelLayerNorm(nn.Module):
    """LayerNorm over one axis with a scale ``gamma``, no shift, biased variance (the official ``LayerNorm``).

    ``(x - mean) / sqrt(var + eps) * gamma`` over ``axis`` of an ``ndim``-d input; gamma has that input's
    rank: ``(1, C, 1, 1, 1)`` for the UNet's (B, C, F, H, W) (the default), ``(1, 1, C)`` for PBNet's
    (B, T, C) (``axis=-1, ndim=3``).
    """

    def __init__(self, dim: int, eps: float = 1e-5, *, axis: int = 1, ndim: int = 5) -> None:
        super().__init__()
        self.eps, self.axis = eps, axis
        shape = [1] * ndim
        shape[axis] = dim
        self.gamma = nn.Parameter(torch.ones(shape))

    def forward(self, x: Tensor) -> Tensor:
        var, mean = torch.var_mean(x, dim=self.axis, unbiased=False, keepdim=True)
        return (x - mean) / (var + self.eps).sqrt() * self.gamma


class PreNorm(nn.Module):
    """fn(norm(x)); ``norm`` defaults to ChannelLayerNorm over the channel dim of (B, C, F, H, W)."""

    def __init__(self, dim: int, fn: nn.Module, norm: nn.Module | None = None) -> None:
        super().__init__()
        self.fn = fn
        self.norm = norm if norm is not None else ChannelLayerNorm(dim)

    def forward(self, x: Tensor, **kwargs: object) -> Tensor:
        return self.fn(self.norm(x), **kwargs)


class GainLayerNorm(nn.Module):
    """LayerNorm over the last dim with a gain ``g`` and no bias (official ``LayerNorm_img``).

    eps is 1e-5 in float32 and 1e-3 in lower precision, as in the official code.
    """

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.g = nn.Parameter(torch.ones(dim))

    @staticmethod
    def standardize(x: Tensor) -> Tensor:
        """(x - mean) / sqrt(var + eps) over the last dim, before the gain."""
        eps = 1e-5 if x.dtype == torch.float32 else 1e-3
        var, mean = torch.var_mean(x, dim=-1, unbiased=False, keepdim=True)
        return (x - mean) * (var + eps).rsqrt()

    def forward(self, x: Tensor) -> Tensor:
        return self.standardize(x) * self.g


class SinusoidalPosEmb(nn.Module):
    """Timestep embedding: cat(sin(t f_k), cos(t f_k)), f_k = exp(-k ln(10000) / (dim/2 - 1))."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.dim = dim

    def forward(self, t: Tensor) -> Tensor:
        half = self.dim // 2
        freqs = torch.exp(torch.arange(half, device=t.device) * -(math.log(10000) / (half - 1)))
        args = t.float()[:, None] * freqs[None, :]
        return torch.cat((args.sin(), args.cos()), dim=-1)


class Block(nn.Module):
    """Conv3d (1x3x3) -> GroupNorm -> optional x * (scale + 1) + shift -> SiLU."""

    def __init__(self, dim: int, dim_out: int, groups: int) -> None:
        super().__init__()
        self.proj = nn.Conv3d(dim, dim_out, (1, 3, 3), padding=(0, 1, 1))
        self.norm = nn.GroupNorm(groups, dim_out)

    def forward(self, x: Tensor, scale_shift: tuple[Tensor, Tensor] | None = None) -> Tensor:
        x = self.norm(self.proj(x))
        if scale_shift is not None:
            scale, shift = scale_shift
            x = x * (scale + 1) + shift
        return F.silu(x)


class CrossAttention(nn.Module):
    """Cosine-similarity cross-attention of every pixel to its frame's condition token.

    Each query sees two keys: a learned null key/value shared over heads and the frame's condition,
    so per pixel and head it is a learned gate between two values (dawn_spec.md §2.3.2).
    """

    def __init__(
        self,
        dim: int,
        out_dim: int,
        context_dim: int,
        heads: int,
        dim_head: int,
        scale: float = 8.0,
    ) -> None:
        super().__init__()
        self.heads, self.scale = heads, scale
        inner = heads * dim_head
        self.norm = GainLayerNorm(dim)
        self.null_kv = nn.Parameter(torch.randn(2, dim_head))
        self.to_q = nn.Linear(dim, inner, bias=False)
        self.to_kv = nn.Linear(context_dim, inner * 2, bias=False)
        self.q_scale = nn.Parameter(torch.ones(dim_head))
        self.k_scale = nn.Parameter(torch.ones(dim_head))
        self.to_out = nn.Sequential(nn.Linear(inner, out_dim, bias=False), GainLayerNorm(out_dim))

    def forward(self, x: Tensor, context: Tensor, x_std: Tensor | None = None) -> Tensor:
        """x: (N, L, dim) pixels of N frames; context: (N, context_dim) -> (N, L, out_dim).

        ``x_std`` = ``GainLayerNorm.standardize(x)`` may be passed to share it between modules.
        """
        if x_std is None:
            x_std = GainLayerNorm.standardize(x)
        # the LayerNorm gain folded into the query projection: one pass over the pixels less
        q = F.linear(x_std, self.to_q.weight * self.norm.g)
        q = rearrange(q, "n l (h d) -> n l h d", h=self.heads)
        k, v = rearrange(self.to_kv(context), "n (two h d) -> two n h d", two=2, h=self.heads)
        null_k, null_v = self.null_kv.unbind(0)
        keys = torch.stack((F.normalize(null_k, dim=-1).expand_as(k), F.normalize(k, dim=-1)), -2)
        keys = keys * (self.k_scale * self.q_scale)  # (N, heads, 2, d): null key first, as official
        # cosine similarity with l2-normalised q: divide the raw dot products by |q| (F.normalize eps)
        dots = torch.einsum("nlhd,nhjd->nlhj", q, keys)
        q_norm = torch.linalg.vector_norm(q, dim=-1).clamp_min(1e-12)
        # softmax over the two keys == sigmoid of their logit difference (fp32 as the official)
        gate = torch.sigmoid(((dots[..., 1] - dots[..., 0]) / q_norm * self.scale).float())
        gate = gate.to(q.dtype)[..., None]  # (N, L, heads, 1): weight of the frame's condition
        out = null_v + gate * (v[:, None] - null_v)  # (N, L, heads, dim_head)
        return self.to_out(rearrange(out, "n l h d -> n l (h d)"))


class ResnetBlock(nn.Module):
    """Official ``ResnetBlock_ca_mul``: time scale/shift + audio/pose/eye cross-attention.

    Built without ``time_emb_dim`` (the output heads) it is a plain two-conv residual block whose
    cross-attention weights exist (for checkpoint compatibility) but are unused.
    """

    def __init__(
        self,
        dim: int,
        dim_out: int,
        *,
        groups: int,
        cross_heads: int,
        cross_dim_head: int,
        time_emb_dim: int | None = None,
        cond_dims: tuple[int, int, int] | None = None,
    ) -> None:
        super().__init__()
        self.cond_dims = cond_dims
        self.time_mlp = self.audio_mlp = self.pose_mlp = self.eye_mlp = None
        if time_emb_dim is not None:
            self.time_mlp = nn.Sequential(nn.SiLU(), nn.Linear(time_emb_dim, dim_out * 2))
        if cond_dims is not None:
            audio, pose, eye = cond_dims
            self.audio_mlp = nn.Sequential(nn.SiLU(), nn.Linear(audio, dim_out * 2))
            self.pose_mlp = nn.Sequential(nn.SiLU(), nn.Linear(pose, dim_out * 2))
            self.eye_mlp = nn.Sequential(nn.SiLU(), nn.Linear(eye, dim_out * 2))
        ca = {
            "out_dim": dim_out,
            "context_dim": dim_out * 2,
            "heads": cross_heads,
            "dim_head": cross_dim_head,
        }
        self.cross_attn_aud = CrossAttention(dim, **ca)
        self.cross_attn_pose = CrossAttention(dim, **ca)
        self.cross_attn_eye = CrossAttention(dim, **ca)
        self.block1 = Block(dim, dim_out, groups)
        self.block2 = Block(dim_out, dim_out, groups)
        self.res_conv = nn.Conv3d(dim, dim_out, 1) if dim != dim_out else nn.Identity()

    def _cond_residual(self, x: Tensor, cond: Tensor) -> Tensor:
        """Sum of the three cross-attentions: (B, C, F, H, W), (B, F, cond) -> (B, C', F, H, W)."""
        assert self.cond_dims is not None and self.audio_mlp is not None
        assert self.pose_mlp is not None and self.eye_mlp is not None
        audio_dim, pose_dim, _ = self.cond_dims
        b, _, f, h, w = x.shape
        pixels = rearrange(x, "b c f h w -> (b f) (h w) c")
        flat = rearrange(cond, "b f c -> (b f) c")
        audio = self.audio_mlp(flat[:, :audio_dim])
        pose = self.pose_mlp(flat[:, audio_dim : audio_dim + pose_dim])
        eye = self.eye_mlp(flat[:, audio_dim + pose_dim :])
        std = GainLayerNorm.standardize(pixels)  # shared by the three cross-attentions
        out = self.cross_attn_pose(pixels, pose, std) + self.cross_attn_aud(pixels, audio, std)
        out = out + self.cross_attn_eye(pixels, eye, std)
        return rearrange(out, "(b f) (h w) c -> b c f h w", b=b, f=f, h=h, w=w)

    def forward(
        self, x: Tensor, time_emb: Tensor | None = None, cond: Tensor | None = None
    ) -> Tensor:
        """x: (B, C, F, H, W); time_emb: (B, T); cond: (B, F, audio+pose+eye) -> (B, C', F, H, W)."""
        scale_shift = None
        if self.time_mlp is not None:
            if time_emb is None:
                raise ValueError("this block is time-conditioned: pass time_emb")
            emb = rearrange(self.time_mlp(time_emb), "b c -> b c 1 1 1")
            scale_shift = emb.chunk(2, dim=1)
        h = self.block1(x, scale_shift)
        if self.cond_dims is not None:
            if cond is None:
                raise ValueError("this block is condition-aware: pass cond")
            h = self._cond_residual(x, cond) + h
        return self.block2(h) + self.res_conv(x)


class SpatialLinearAttention(nn.Module):
    """Per-frame linear attention over H*W positions (q softmax over features, k over positions)."""

    def __init__(self, dim: int, heads: int, dim_head: int) -> None:
        super().__init__()
        self.heads, self.scale = heads, dim_head**-0.5
        hidden = heads * dim_head
        self.to_qkv = nn.Conv2d(dim, hidden * 3, 1, bias=False)
        self.to_out = nn.Conv2d(hidden, dim, 1)

    def forward(self, x: Tensor, max_elements: int = 1 << 24) -> Tensor:
        b, _, _, h, w = x.shape
        frames = rearrange(x, "b c f h w -> (b f) c h w")
        # frames are independent: chunk them so the (3 * hidden, h, w) projections of a chunk stay
        # below max_elements, making the peak memory independent of the clip length
        chunk = max(1, max_elements // (self.to_qkv.out_channels * h * w))
        out = torch.cat([self._attend(part) for part in frames.split(chunk)], dim=0)
        return rearrange(out, "(b f) c h w -> b c f h w", b=b)

    def _attend(self, frames: Tensor) -> Tensor:
        """frames: (N, dim, h, w) -> (N, dim, h, w)."""
        h, w = frames.shape[-2:]
        q, k, v = rearrange(
            self.to_qkv(frames), "n (three h c) x y -> three n h c (x y)", three=3, h=self.heads
        )
        q = q.softmax(dim=-2) * self.scale
        k = k.softmax(dim=-1)
        context = torch.einsum("nhdp,nhep->nhde", k, v)
        out = torch.einsum("nhde,nhdp->nhep", context, q)
        return self.to_out(rearrange(out, "n h c (x y) -> n (h c) x y", x=h, y=w))


class MultiHeadAttention(nn.Module):
    """Holds the official attention projections: ``to_qkv`` (no bias) and ``to_out`` (no bias)."""

    def __init__(self, dim: int, heads: int, dim_head: int) -> None:
        super().__init__()
        self.heads, self.dim_head = heads, dim_head
        self.to_qkv = nn.Linear(dim, heads * dim_head * 3, bias=False)
        self.to_out = nn.Linear(heads * dim_head, dim, bias=False)

    def qkv(self, x: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """(..., n, dim) -> q (scaled by dim_head^-0.5), k, v: each (..., heads, n, dim_head)."""
        q, k, v = rearrange(
            self.to_qkv(x), "... n (three h d) -> three ... h n d", three=3, h=self.heads
        )
        return q * self.dim_head**-0.5, k, v

    def merge(self, out: Tensor) -> Tensor:
        return self.to_out(rearrange(out, "... h n d -> ... n (h d)"))


class SpatialAttention(nn.Module):
    """Full attention over the H*W tokens of each frame (mid block; no positional terms)."""

    def __init__(self, dim: int, heads: int, dim_head: int) -> None:
        super().__init__()
        self.fn = MultiHeadAttention(dim, heads, dim_head)

    def forward(self, x: Tensor) -> Tensor:
        b, _, f, h, w = x.shape
        q, k, v = self.fn.qkv(rearrange(x, "b c f h w -> (b f) (h w) c"))
        out = F.scaled_dot_product_attention(q, k, v, scale=1.0)  # q is already scaled
        return rearrange(self.fn.merge(out), "(b f) (h w) c -> b c f h w", b=b, f=f, h=h, w=w)


@dataclass
class TemporalContext:
    """Per-forward state shared by every temporal attention of the UNet.

    cos, sin: (F, rot_dim) rotary angles; bias_table: (heads, 2 * span + 1) relative bias;
    window: |j - i| > window is masked (None: no mask); mode: "local" or "full";
    max_logits: cap on logits elements per chunk of pixel sequences (peak-memory knob);
    dense_bias: (heads, F, F) bias + -1e8 band mask, set for the "full" mode (built once).
    """

    cos: Tensor
    sin: Tensor
    bias_table: Tensor
    window: int | None
    mode: str = "local"
    max_logits: int = 1 << 24
    dense_bias: Tensor | None = None


class TemporalAttention(nn.Module):
    """Attention over frames, independently for every pixel: sequences 'b (h w) f c'."""

    def __init__(self, dim: int, heads: int, dim_head: int) -> None:
        super().__init__()
        self.fn = MultiHeadAttention(dim, heads, dim_head)

    def _attend(self, seq: Tensor, ctx: TemporalContext) -> Tensor:
        q, k, v = self.fn.qkv(seq)  # (S, heads, F, d)
        q = apply_rotary(q, ctx.cos, ctx.sin)
        k = apply_rotary(k, ctx.cos, ctx.sin)
        if ctx.dense_bias is not None:
            return self.fn.merge(dense_attention(q, k, v, ctx.dense_bias))
        return self.fn.merge(local_attention(q, k, v, ctx.bias_table, ctx.window))

    def forward(self, x: Tensor, *, ctx: TemporalContext) -> Tensor:
        b, _, f, h, w = x.shape
        seqs = rearrange(x, "b c f h w -> (b h w) f c")
        keys = f if ctx.mode == "full" or ctx.window is None else min(f, 3 * ctx.window + 1)
        # chunk the b*h*w sequences so the logits of one chunk stay below ctx.max_logits
        chunk = max(1, ctx.max_logits // (self.fn.heads * f * keys))
        out = torch.cat([self._attend(s, ctx) for s in seqs.split(chunk)], dim=0)
        return rearrange(out, "(b h w) f c -> b c f h w", b=b, h=h, w=w)
