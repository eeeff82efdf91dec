"""Building blocks of the A2V-FDM 3D UNet (dawn_spec.md §2.3.2).

Module and parameter names follow the official ``video-diffusion-pytorch``-derived code so the
official ``denoise_fn.*`` state dict loads unchanged: ``Residual(PreNorm(...))`` wrappers with
``.fn`` / ``.norm.gamma``, ``ResnetBlock`` = the official ``ResnetBlock_ca_mul`` (time scale/shift +
three per-frame condition cross-attentions), ``Block``, ``CrossAttention``, ``SpatialLinearAttention``.

Layout: video tensors are (B, C, F, H, W) throughout. The attention layers normalise their input
(``PreNorm``) straight into the channel-last memory order their projections read (``memory_order``),
as one fused LayerNorm: the rearranges after it are then free views, and their outputs go back as
(B, C, F, H, W) views that the residual sum reads in place.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import Tensor, nn

from talkinghead.dawn.models.conv3d import Conv3d
from talkinghead.dawn.models.local_attention import (
    banded_blocks,
    fused_attention,
    local_attention,
)
from talkinghead.dawn.models.rotary import apply_rotary

ATTENTION_MODES = ("local", "full")


class Residual(nn.Module):
    """x + fn(x)."""

    def __init__(self, fn: nn.Module) -> None:
        super().__init__()
        self.fn = fn

    def forward(self, x: Tensor, **kwargs: object) -> Tensor:
        # x first: the sum takes x's (contiguous) layout whatever layout fn's output view has
        return x + self.fn(x, **kwargs)


CHANNELS_LAST = (0, 2, 3, 4, 1)  # memory order b f h w c


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

    def forward(self, x: Tensor, memory_order: tuple[int, ...] | None = None) -> Tensor:
        """x -> the same shape; with ``memory_order``, laid out in memory as ``x.permute(memory_order)``.

        Without ``memory_order``: the official formula and its rounding (PBNet's norm: its pose and
        blink keep the official arithmetic bit for bit). With it (the UNet's attention layers, via
        ``PreNorm``): one fused LayerNorm pass over that layout (plus the copy into it) instead of
        var_mean and four elementwise passes; ``memory_order`` must end with the normalised axis.
        """
        axis = self.axis % x.dim()
        if memory_order is None:
            var, mean = torch.var_mean(x, dim=axis, unbiased=False, keepdim=True)
            return (x - mean) / (var + self.eps).sqrt() * self.gamma
        if memory_order[-1] != axis:
            raise ValueError(
                f"memory_order={memory_order} must end with the normalised axis {axis}."
            )
        y = F.layer_norm(
            x.permute(memory_order), x.shape[axis : axis + 1], self.gamma.flatten(), None, self.eps
        )
        return y.permute(sorted(range(x.dim()), key=memory_order.__getitem__))


class PreNorm(nn.Module):
    """fn(norm(x)); ``norm`` defaults to ChannelLayerNorm over the channel dim of (B, C, F, H, W).

    When ``fn`` has a ``memory_order``, x is normalised into that memory order (the layout its
    projections read), so the rearranges inside ``fn`` are views.
    """

    def __init__(self, dim: int, fn: nn.Module, norm: nn.Module | None = None) -> None:
        super().__init__()
        self.fn = fn
        self.norm = norm if norm is not None else ChannelLayerNorm(dim)

    def forward(self, x: Tensor, **kwargs: object) -> Tensor:
        order = getattr(self.fn, "memory_order", None)
        return self.fn(self.norm(x) if order is None else self.norm(x, order), **kwargs)


class GainLayerNorm(nn.Module):
    """LayerNorm over the last dim with a gain ``g`` and no bias (official ``LayerNorm_img``).

    eps is 1e-5 in float32 and 1e-3 in lower precision, as in the official code.
    """

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.g = nn.Parameter(torch.ones(dim))

    @staticmethod
    def standardize(x: Tensor, gain: Tensor | None = None) -> Tensor:
        """(x - mean) / sqrt(var + eps) over the last dim (times ``gain``): one fused pass."""
        eps = 1e-5 if x.dtype == torch.float32 else 1e-3
        return F.layer_norm(x, x.shape[-1:], gain, None, eps)

    def forward(self, x: Tensor) -> Tensor:
        return self.standardize(x, self.g)


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
        self.proj = Conv3d(dim, dim_out, (1, 3, 3), padding=(0, 1, 1))
        self.norm = nn.GroupNorm(groups, dim_out)

    def forward(self, x: Tensor, scale_shift: tuple[Tensor, Tensor] | None = None) -> Tensor:
        x = self.norm(self.proj(x))
        if scale_shift is not None:
            scale, shift = scale_shift
            x = torch.addcmul(shift, x, scale + 1)  # x * (scale + 1) + shift in one pass
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
        Computed without the (N, L, heads, dim_head) attention output: the output projection is
        linear, so ``to_out(null_v + gate (v - null_v))`` = ``W null_v + gate @ (W_h (v_h - null_v))``
        per head, and the logit difference of the two keys is one product with the key difference.
        """
        if x_std is None:
            x_std = GainLayerNorm.standardize(x)
        n, heads = context.shape[0], self.heads
        # the LayerNorm gain folded into the query projection: one pass over the pixels less
        w_q = (self.to_q.weight * self.norm.g).unflatten(0, (heads, -1))  # (heads, d, dim)
        k, v = rearrange(self.to_kv(context), "n (two h d) -> two n h d", two=2, h=heads)
        null_k, null_v = self.null_kv.unbind(0)
        scale_k = self.k_scale * self.q_scale
        # cosine similarity with l2-normalised q and keys (null key first, as official): the logit
        # difference is q . (key - null key) / |q| (F.normalize eps on |q|)
        key_diff = (F.normalize(k, dim=-1) - F.normalize(null_k, dim=-1)) * scale_k  # (N, h, d)
        diff = torch.bmm(x_std, torch.einsum("hdc,nhd->nch", w_q, key_diff))  # (N, L, heads)
        q = F.linear(x_std, w_q.flatten(0, 1)).unflatten(-1, (heads, -1))
        q_norm = torch.linalg.vector_norm(q, dim=-1).clamp_min(1e-12)
        # softmax over the two keys == sigmoid of their logit difference (fp32 as the official)
        gate = torch.sigmoid((diff / q_norm * self.scale).float()).to(x_std.dtype)  # (N, L, heads)
        w_out = self.to_out[0].weight.unflatten(1, (heads, -1))  # (out_dim, heads, d)
        per_head = torch.einsum("nhe,ohe->nho", v - null_v, w_out)  # (N, heads, out_dim)
        base = torch.einsum("ohe,e->o", w_out, null_v)
        out = torch.baddbmm(base.expand(n, 1, -1), gate, per_head)
        return self.to_out[1](out)


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
        self.res_conv = Conv3d(dim, dim_out, 1) if dim != dim_out else nn.Identity()

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
    """Per-frame linear attention over H*W positions (q softmax over features, k over positions).

    The 1x1 convolutions are applied as matrix products on the channel-last pixels (the same
    weights: ``to_qkv`` / ``to_out`` keep their official Conv2d shapes).
    """

    memory_order = CHANNELS_LAST  # PreNorm lays x out as b f h w c

    def __init__(self, dim: int, heads: int, dim_head: int) -> None:
        super().__init__()
        self.heads, self.scale = heads, dim_head**-0.5
        hidden = heads * dim_head
        self.to_qkv = nn.Conv2d(dim, hidden * 3, 1, bias=False)
        self.to_out = nn.Conv2d(hidden, dim, 1)

    def forward(self, x: Tensor, max_elements: int = 1 << 24) -> Tensor:
        b, c, f, h, w = x.shape
        pixels = x.permute(0, 2, 3, 4, 1).reshape(b * f, h * w, c)  # a view after PreNorm
        # frames are independent: chunk them so the (3 * hidden, h, w) projections of a chunk stay
        # below max_elements, making the peak memory independent of the clip length
        chunk = max(1, max_elements // (self.to_qkv.out_channels * h * w))
        out = torch.cat([self._attend(part) for part in pixels.split(chunk)], dim=0)
        return out.view(b, f, h, w, c).permute(0, 4, 1, 2, 3)

    def _attend(self, pixels: Tensor) -> Tensor:
        """pixels: (N, P, dim) channel-last -> (N, P, dim).

        out = to_out(sum_h context_h^T q_h) with context_h = k_h^T v_h and v = x W_v: both
        projections are linear, so the values and the attention output are never materialised:
        context_h = (k_h^T x) W_v,h and out = q @ M + bias with M_h = scale * context_h W_out,h^T.
        """
        n, heads = pixels.shape[0], self.heads
        w_q, w_k, w_v = self.to_qkv.weight.flatten(1).chunk(3)  # (heads * d, dim) each
        q = F.linear(pixels, w_q).unflatten(-1, (heads, -1)).softmax(dim=-1)  # over features
        k = F.linear(pixels, w_k).softmax(dim=1)  # (N, P, heads * d), over positions
        k_x = torch.bmm(k.transpose(1, 2), pixels).unflatten(1, (heads, -1))  # (N, h, d, dim)
        context = torch.einsum("nhtc,hec->nhte", k_x, w_v.unflatten(0, (heads, -1)))
        w_out = self.to_out.weight.flatten(1).unflatten(1, (heads, -1))  # (dim, heads, d)
        m = torch.einsum("nhte,ohe->nhto", context, w_out * self.scale).reshape(
            n, -1, w_out.shape[0]
        )
        return torch.baddbmm(self.to_out.bias.expand(n, 1, -1), q.flatten(2), m)


class MultiHeadAttention(nn.Module):
    """Holds the official attention projections: ``to_qkv`` (no bias) and ``to_out`` (no bias)."""

    def __init__(self, dim: int, heads: int, dim_head: int) -> None:
        super().__init__()
        self.heads, self.dim_head = heads, dim_head
        self.scale = dim_head**-0.5  # of q . k: passed to the attention kernel, q is not scaled
        self.to_qkv = nn.Linear(dim, heads * dim_head * 3, bias=False)
        self.to_out = nn.Linear(heads * dim_head, dim, bias=False)

    def qkv(self, x: Tensor) -> Tensor:
        """(..., n, dim) -> (..., n, 3, heads, dim_head): q, k, v along dim -3 (a view)."""
        return self.to_qkv(x).unflatten(-1, (3, self.heads, self.dim_head))

    def merge(self, out: Tensor) -> Tensor:
        """(..., heads, n, dim_head) -> (..., n, dim); free when ``out`` is laid out n-major."""
        return self.to_out(rearrange(out, "... h n d -> ... n (h d)"))


class SpatialAttention(nn.Module):
    """Full attention over the H*W tokens of each frame (mid block; no positional terms)."""

    memory_order = CHANNELS_LAST  # PreNorm lays x out as b f h w c: tokens (b f) (h w) c

    def __init__(self, dim: int, heads: int, dim_head: int) -> None:
        super().__init__()
        self.fn = MultiHeadAttention(dim, heads, dim_head)

    def forward(self, x: Tensor) -> Tensor:
        b, c, f, h, w = x.shape
        q, k, v = self.fn.qkv(x.permute(0, 2, 3, 4, 1).reshape(b * f, h * w, c)).unbind(-3)
        # 4-D (frames, heads, tokens, d) views: the fused CPU flash kernel
        out = F.scaled_dot_product_attention(
            q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2), scale=self.fn.scale
        )
        return self.fn.merge(out).view(b, f, h, w, c).permute(0, 4, 1, 2, 3)


@dataclass
class TemporalContext:
    """Per-forward state shared by every temporal attention of the UNet.

    cos, sin: (F, rot_dim) rotary angles; bias_table: (heads, 2 * span + 1) relative bias;
    window: |j - i| > window is masked (None: no mask); mode: "local" or "full";
    max_logits: cap on logits elements per chunk of pixel sequences (peak-memory knob);
    dense_bias: (heads, F, F) bias + -1e8 band mask, set for the "full" mode (built once);
    band_mask: (1, heads, B, B + 2 * window) mask of the banded path's query blocks of B frames,
    set when the local mode takes that path (built once per forward, shared by every layer).
    """

    cos: Tensor
    sin: Tensor
    bias_table: Tensor
    window: int | None
    mode: str = "local"
    max_logits: int = 1 << 24
    dense_bias: Tensor | None = None
    band_mask: Tensor | None = None


class TemporalAttention(nn.Module):
    """Attention over frames, independently for every pixel: sequences 'b (h w) f c'."""

    memory_order = (0, 3, 4, 2, 1)  # PreNorm lays x out as b h w f c: sequences (b h w) f c

    def __init__(self, dim: int, heads: int, dim_head: int) -> None:
        super().__init__()
        self.fn = MultiHeadAttention(dim, heads, dim_head)

    def _attend(self, seq: Tensor, ctx: TemporalContext) -> Tensor:
        """seq: (S, F, dim) -> (S, F, dim)."""
        qkv = self.fn.qkv(seq)  # (S, F, 3, heads, d)
        # q and k rotated in one call; cos / sin (F, rot) broadcast over (2, heads)
        q, k = apply_rotary(
            qkv[:, :, :2], ctx.cos[:, None, None], ctx.sin[:, None, None], complex_form=True
        ).unbind(2)
        q, k, v = q.transpose(1, 2), k.transpose(1, 2), qkv[:, :, 2].transpose(1, 2)
        if ctx.band_mask is not None and ctx.window is not None:
            # the output projection per query block: the blocks are concatenated at the model
            # width instead of heads * d
            blocks = banded_blocks(q, k, v, ctx.band_mask, ctx.window, scale=self.fn.scale)
            return torch.cat([self.fn.to_out(b.flatten(-2)) for b in blocks], dim=1)
        if ctx.dense_bias is not None:
            out = fused_attention(q, k, v, ctx.dense_bias, scale=self.fn.scale)
        else:
            out = local_attention(q, k, v, ctx.bias_table, ctx.window, scale=self.fn.scale)
        return self.fn.merge(out)

    def forward(self, x: Tensor, *, ctx: TemporalContext) -> Tensor:
        b, c, f, h, w = x.shape
        seqs = x.permute(0, 3, 4, 2, 1).reshape(b * h * w, f, c)  # a view after PreNorm
        keys = f if ctx.mode == "full" or ctx.window is None else min(f, 3 * ctx.window + 1)
        # chunk the b*h*w sequences so the logits of one chunk stay below ctx.max_logits
        chunk = max(1, ctx.max_logits // (self.fn.heads * f * keys))
        out = torch.cat([self._attend(s, ctx) for s in seqs.split(chunk)], dim=0)
        return out.view(b, h, w, f, c).permute(0, 4, 3, 1, 2)
