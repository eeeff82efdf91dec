"""The Diffused Heads UNet's fast inference path: the same parameters and function, regrouped work.

``DiffusedHeadsUNet.forward`` keeps the official op order (the golden parity tests pin it). Sampling
calls the network F x S times (S steps per frame) with inputs that are mostly constant, so this path
(``FastUNet``, a view over a ``DiffusedHeadsUNet`` that shares its parameters) does per frame or per
timestep what does not change within them, and runs the rest in a cheaper form:

* **once per frame** (``FastUNet.condition``): the motion and identity frames' part of the first
  convolution (9 of its 12 input channels; per step only the noisy frame's 3 channels are convolved),
  the audio-window embedding and every residual block's audio FiLM (scale, shift);
* **once per timestep value** (cached across frames and clips): the timestep embedding and every
  block's time FiLM, folded with the block's GroupNorm affine: ``GN(h)·(1+s_t)+b_t`` then
  ``·(1+s_a)+b_a`` is ``norm(h)·γ(1+s_t)(1+s_a) + (β(1+s_t)+b_t)(1+s_a)+b_a`` (one GroupNorm call
  with those as its affine at batch 1, norm + one ``addcmul`` above);
* **Winograd convolutions** for the 3x3 convolutions of wide layers (>= 128 channels in and out;
  ``talkinghead.winograd``; oneDNN has no Winograd kernel on AVX2): F(4x4, 3x3) on maps of at least
  32 x 32 (2.25 instead of 9 multiply-adds per input channel and output pixel), F(2x2, 3x3) on smaller
  ones (4), weights transformed once per layer; the narrow ones through oneDNN;
* **channels-last** feature maps when Winograd runs (it works in that layout; the attention's tokens
  and its 1x1 projections are then free views and plain matrix products); narrow networks stay
  channels-first, rounding as the official kernels do (see ``FastUNet.__init__``);
* **attention** through ``F.scaled_dot_product_attention`` on 4-D (B, heads, tokens, ch) views, the
  form that PyTorch's fused CPU flash kernel takes (tests/diffused_heads/test_fast_unet.py pins the
  kernel), with scale ch^-1/2 (the official scales q and k by ch^-1/4 each).

Every change only regroups float32 arithmetic: outputs agree with ``forward`` to rounding, tested
(tests/diffused_heads/test_fast_unet.py): ≤ 1e-5 on random networks; on the golden weights, whose
attention amplifies any rounding difference, within the 2e-3 that ``forward`` itself keeps to the
official recordings, and ~5e-5 end to end on the golden well-conditioned 4-frame run. The golden
weights are narrow, so the wide path (Winograd, channels-last) is checked on random wide networks
(≤ 1e-5 against ``forward``) and by the benchmark against the official code. Winograd is used on CPU
in float32 only; elsewhere the convolutions are the device's own.

Memory: the Winograd weights take 16/9 (F(2x2)) or 4x (F(4x4)) of the wide convolutions' weights, made
at a layer's first call: at the release width +1.5 GB at 64 px and +2.3 GB at 128 px (the network
itself is 0.86 GB); ``official_order`` sampling needs none. ``FastUNet.of(unet)`` keeps one per
network and rebuilds it when a parameter changes.
"""

from __future__ import annotations

import weakref
from collections.abc import Iterator
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from talkinghead.diffused_heads.unet import AttentionBlock, CondResBlock, DiffusedHeadsUNet
from talkinghead.winograd import winograd_conv3x3, winograd_weight

WINOGRAD_MIN_CHANNELS = 128  # narrower 3x3 convolutions stay on oneDNN (the transforms cost more)
# maps at least this large take F(4x4, 3x3) (2.25 products per pixel); smaller ones F(2x2, 3x3) (4 per
# pixel, but 4x the tiles per matrix product: F(4x4) has too few at 16x16)
WINOGRAD_F4_MIN_SIDE = 32
CL = torch.channels_last
# FastUNet.of: one per network, with the parameters' (address, version, dtype) it was built from
_BUILT: weakref.WeakKeyDictionary[DiffusedHeadsUNet, tuple[tuple, FastUNet]] = (
    weakref.WeakKeyDictionary()
)


@dataclass
class FrameCondition:
    """What stays fixed over the denoising steps of one frame (``FastUNet.condition``).

    Attributes:
        first: (B, C0, S, S) channels-last: the first convolution over motion ‖ identity, + its bias.
        audio_scale: (B, ΣC) 1 + s_a of every residual block, concatenated in network order.
        audio_shift: (B, ΣC) b_a, likewise.
    """

    first: Tensor
    audio_scale: Tensor
    audio_shift: Tensor


def _winograd_pays(conv: nn.Conv2d) -> bool:
    return (
        conv.padding == (1, 1)
        and conv.stride == (1, 1)
        and min(conv.in_channels, conv.out_channels) >= WINOGRAD_MIN_CHANNELS
        and conv.weight.dtype == torch.float32
        and conv.weight.device.type == "cpu"
    )


class FastUNet:
    """Fast inference over a ``DiffusedHeadsUNet`` (see the module docstring); eval mode only.

    Call ``condition`` once per frame, then ``fast(x_t, timesteps, cond)`` per step: the eps ‖ v of
    ``unet(x_t, timesteps, x_cond, motion_frames, audio_emb)``. It holds the network weakly (so that
    ``FastUNet.of``'s cache does not keep a network alive): keep the network while using it.
    """

    def __init__(self, unet: DiffusedHeadsUNet) -> None:
        self._unet = weakref.ref(unet)
        self.res_blocks = [
            layer
            for seq in [*unet.input_blocks, unet.middle_block, *unet.output_blocks]
            for layer in seq
            if isinstance(layer, CondResBlock)
        ]
        self.widths = [blk.out_layers[0].num_channels for blk in self.res_blocks]
        first = unet.input_blocks[0][0]
        convs = [m for m in unet.modules() if isinstance(m, nn.Conv2d) and m.kernel_size == (3, 3)]
        self.winograd = {c for c in convs if _winograd_pays(c)}
        self._winograd_weights: dict[tuple[nn.Conv2d, int], Tensor] = {}  # (conv, tile) -> weight
        # channels-last where Winograd runs (it works in that layout). Narrow networks stay
        # channels-first, in the official kernels' rounding: oneDNN's channels-last convolutions
        # would be 1.1-1.2x faster there, but round differently, and the golden weights amplify
        # that (SL run: 2.2e-3 at one pixel, over its 1e-3 tolerance; channels-first: 2.5e-5)
        self.memory_format = CL if self.winograd else torch.contiguous_format
        # the other 3x3 weights in that layout (a weight in the other one is converted at every call)
        self.weights = {
            c: c.weight.detach().contiguous(memory_format=self.memory_format)
            for c in convs
            if c not in self.winograd and c is not first
        }
        n = unet.cfg.in_channels  # the first convolution, split: noisy frame | motion ‖ identity
        self.first_noisy, self.first_cond = (
            w.detach().contiguous(memory_format=self.memory_format)
            for w in first.weight.split([n, first.in_channels - n], dim=1)
        )
        self._time: dict[tuple, tuple[Tensor, Tensor]] = {}

    @property
    def unet(self) -> DiffusedHeadsUNet:
        unet = self._unet()
        if unet is None:
            raise RuntimeError("the network of this FastUNet was deleted")
        return unet

    @classmethod
    def of(cls, unet: DiffusedHeadsUNet) -> FastUNet:
        """The fast path of ``unet``, built once and rebuilt after any change of its parameters."""
        stamp = tuple((p.data_ptr(), p._version, p.dtype) for p in unet.parameters())
        cached = _BUILT.get(unet)
        if cached is None or cached[0] != stamp:
            cached = _BUILT[unet] = (stamp, cls(unet))
        return cached[1]

    # -- per frame and per timestep ----------------------------------------------------------------

    @torch.no_grad()
    def condition(self, x_cond: Tensor, motion_frames: Tensor, audio_emb: Tensor) -> FrameCondition:
        """x_cond (B, 3, S, S), motion_frames (B, n·3, S, S), audio_emb (B, 2n+1, C) -> the frame's constants."""
        unet = self.unet
        cond = torch.cat([motion_frames, x_cond], dim=1).contiguous(
            memory_format=self.memory_format
        )
        first = F.conv2d(cond, self.first_cond, unet.input_blocks[0][0].bias, padding=1)
        a_emb = unet.audio_embed(audio_emb.reshape(audio_emb.shape[0], -1))
        films = [blk.audio_emb_layers(a_emb).chunk(2, dim=1) for blk in self.res_blocks]
        scale = torch.cat([s for s, _ in films], dim=1)
        return FrameCondition(first, 1 + scale, torch.cat([b for _, b in films], dim=1))

    def _time_film(self, timesteps: Tensor, dtype: torch.dtype) -> tuple[Tensor, Tensor]:
        """(γ(1+s_t), β(1+s_t)+b_t) of every block, concatenated: (B, ΣC) each; cached per value."""
        key = (tuple(timesteps.tolist()), dtype, timesteps.device)
        if key not in self._time:
            if len(self._time) > 4096:  # a few sampling schedules' worth
                self._time.clear()
            t_emb = self.unet.time_embed(timesteps, dtype)
            weight, bias = [], []
            for blk in self.res_blocks:
                scale, shift = blk.t_emb_layers(t_emb).to(dtype).chunk(2, dim=1)
                norm = blk.out_layers[0]
                weight.append(norm.weight * (1 + scale))
                bias.append(torch.addcmul(shift, norm.bias, 1 + scale))
            self._time[key] = (torch.cat(weight, dim=1), torch.cat(bias, dim=1))
        return self._time[key]

    # -- one step ----------------------------------------------------------------------------------

    @torch.no_grad()
    def __call__(self, x_t: Tensor, timesteps: Tensor, cond: FrameCondition) -> Tensor:
        """x_t (B, 3, S, S), timesteps (B,), the frame's ``cond`` -> eps ‖ v (B, 6, S, S), contiguous."""
        unet = self.unet
        t_weight, t_bias = self._time_film(timesteps, x_t.dtype)
        weight = (t_weight * cond.audio_scale).split(self.widths, dim=1)
        bias = torch.addcmul(cond.audio_shift, t_bias, cond.audio_scale).split(self.widths, dim=1)
        films = iter(zip(weight, bias, strict=True))
        x = x_t.contiguous(memory_format=self.memory_format)
        h = F.conv2d(x, self.first_noisy, padding=1).add_(cond.first)
        skips = [h]
        for seq in unet.input_blocks[1:]:
            h = self._sequence(seq, h, films)
            skips.append(h)
        h = self._sequence(unet.middle_block, h, films)
        for seq in unet.output_blocks:
            h = self._sequence(seq, torch.cat([h, skips.pop()], dim=1), films)
        norm, _, conv = unet.out
        h = F.silu(F.group_norm(h, norm.num_groups, norm.weight, norm.bias, norm.eps), inplace=True)
        return self._conv(conv, h).contiguous()

    def _sequence(
        self, seq: nn.Sequential, h: Tensor, films: Iterator[tuple[Tensor, Tensor]]
    ) -> Tensor:
        for layer in seq:
            if isinstance(layer, CondResBlock):
                h = self._res_block(layer, h, *next(films))
            elif isinstance(layer, AttentionBlock):
                h = self._attention(layer, h)
            else:
                raise TypeError(f"no fast path for {type(layer).__name__}")
        return h

    def _conv(self, conv: nn.Conv2d, x: Tensor) -> Tensor:
        """``conv(x)`` (3x3 with padding 1, or 1x1), in and out in ``memory_format``."""
        if conv in self.winograd:
            tile = 4 if min(x.shape[-2:]) >= WINOGRAD_F4_MIN_SIDE else 2
            if (conv, tile) not in self._winograd_weights:  # once per layer
                self._winograd_weights[conv, tile] = winograd_weight(conv.weight.detach(), tile)
            y = winograd_conv3x3(
                x.permute(0, 2, 3, 1), self._winograd_weights[conv, tile], conv.bias
            )
            return y.permute(0, 3, 1, 2)
        if conv.kernel_size == (1, 1) and self.memory_format == CL:  # a product over (B, H, W, C)
            y = F.linear(x.permute(0, 2, 3, 1), conv.weight[:, :, 0, 0], conv.bias)
            return y.permute(0, 3, 1, 2)
        return F.conv2d(x, self.weights.get(conv, conv.weight), conv.bias, padding=conv.padding)

    def _res_block(self, blk: CondResBlock, x: Tensor, weight: Tensor, bias: Tensor) -> Tensor:
        norm_in, _, conv_in = blk.in_layers
        h = F.group_norm(x, norm_in.num_groups, norm_in.weight, norm_in.bias, norm_in.eps)
        h = F.silu(h, inplace=True)
        if blk.resample is not None:
            h, x = blk._resample(h), blk._resample(x)
        h = self._conv(conv_in, h)
        norm = blk.out_layers[0]
        if h.shape[0] == 1:  # the folded FiLM is the GroupNorm's own affine
            h = F.group_norm(h, norm.num_groups, weight[0], bias[0], norm.eps)
        else:
            h = F.group_norm(h, norm.num_groups, eps=norm.eps)
            h = torch.addcmul(bias[..., None, None], h, weight[..., None, None], out=h)
        h = self._conv(blk.out_layers[3], F.silu(h, inplace=True))
        skip = blk.skip_connection
        return h.add_(x if isinstance(skip, nn.Identity) else self._conv(skip, x))

    def _attention(self, blk: AttentionBlock, x: Tensor) -> Tensor:
        b, c, height, width = x.shape
        heads = blk.num_heads
        h = F.group_norm(x, blk.norm.num_groups, blk.norm.weight, blk.norm.bias, blk.norm.eps)
        tokens = h.permute(0, 2, 3, 1).reshape(b, height * width, c)  # a view if channels-last
        qkv = F.linear(tokens, blk.qkv.weight[..., 0], blk.qkv.bias)
        # legacy layout: per head [q, k, v] of c/heads channels each
        q, k, v = qkv.unflatten(-1, (heads, 3, c // heads)).unbind(3)
        out = F.scaled_dot_product_attention(
            q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2), scale=(c // heads) ** -0.5
        )
        out = F.linear(
            out.transpose(1, 2).reshape(b, height * width, c), blk.proj_out.weight[..., 0]
        )
        out = out.add_(blk.proj_out.bias).view(b, height, width, c).permute(0, 3, 1, 2)
        return x + out  # in x's layout
