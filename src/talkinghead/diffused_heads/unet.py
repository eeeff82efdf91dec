"""The Diffused Heads denoiser: a simplified guided-diffusion UNet (diffusedheads_spec.md §2).

Input channels are the noisy frame x_t (3), the motion frames (n x 3, oldest first) and the identity
frame (3). Every residual block is modulated twice after its second GroupNorm, by the timestep
embedding and by the audio-window embedding (``audio_condition_type='double_pre_gn'``):
``h = GN(h)·(1+s_t)+b_t``, ``h = h·(1+s_a)+b_a``. Self-attention uses the guided-diffusion *legacy*
head layout. The output is eps ‖ v (learned-range variance, Nichol & Dhariwal 2021).

Parameter names are the official ones (``time_embed.fc.0``, ``input_blocks.7.1.qkv``, ...), so the
official state dicts load without a rename table; ``DiffusedHeadsUNet(cfg)`` at the ``crema`` preset has
the 324 tensors and 215,748,614 parameters of the released model. Only the configuration the release
uses is built (identity as a frame, double_pre_gn audio); the unused official variants are left out.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from talkinghead.diffused_heads.configs import DiffusedHeadsUNetConfig


def timestep_sinusoid(
    timesteps: Tensor, channels: int, dtype: torch.dtype = torch.float32
) -> Tensor:
    """[cos(t·f), sin(t·f)] with ``f_j = exp(−ln(1e4)·j / (2·channels))``, j < channels/2.

    The divisor is 2·channels (not channels/2 as in guided-diffusion): official, kept for the weights.
    Evaluated in the official op order (float32 frequencies, then cast), so it is bit-identical.

    Args:
        timesteps: (B,) integer or float timesteps.
    Returns:
        (B, channels).
    """
    freqs = torch.exp(-math.log(1e4) * torch.arange(channels // 2) / (channels * 2))
    args = timesteps[:, None].to(dtype) * freqs.to(dtype=dtype, device=timesteps.device)[None]
    return torch.cat([torch.cos(args), torch.sin(args)], dim=-1)


class TimestepEmbedding(nn.Module):
    """Sinusoid of size C -> Linear(C, 4C) -> SiLU -> Linear(4C, 4C)."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.channels = channels
        self.fc = nn.Sequential(
            nn.Linear(channels, 4 * channels), nn.SiLU(), nn.Linear(4 * channels, 4 * channels)
        )

    def forward(self, timesteps: Tensor, dtype: torch.dtype = torch.float32) -> Tensor:
        """(B,) -> (B, 4C)."""
        return self.fc(timestep_sinusoid(timesteps, self.channels, dtype))


class CondResBlock(nn.Module):
    """GN -> SiLU -> [resample] -> conv -> GN·(1+s_t)+b_t -> ·(1+s_a)+b_a -> SiLU -> dropout -> conv, + skip.

    ``resample``: "down" (2x2 average pooling) or "up" (nearest x2), applied to the residual branch
    before its first convolution and to the skip input.
    """

    def __init__(
        self,
        channels: int,
        emb_channels: int,
        dropout: float,
        out_channels: int | None = None,
        resample: str | None = None,
        groups: int = 32,
    ) -> None:
        super().__init__()
        out_channels = out_channels or channels
        self.resample = resample
        self.in_layers = nn.Sequential(
            nn.GroupNorm(groups, channels),
            nn.SiLU(),
            nn.Conv2d(channels, out_channels, 3, padding=1),
        )
        self.t_emb_layers = nn.Sequential(nn.SiLU(), nn.Linear(emb_channels, 2 * out_channels))
        self.audio_emb_layers = nn.Sequential(nn.SiLU(), nn.Linear(emb_channels, 2 * out_channels))
        self.out_layers = nn.Sequential(
            nn.GroupNorm(groups, out_channels),
            nn.SiLU(),
            nn.Dropout(p=dropout),
            nn.Conv2d(out_channels, out_channels, 3, padding=1),
        )
        self.skip_connection = (
            nn.Identity() if out_channels == channels else nn.Conv2d(channels, out_channels, 1)
        )

    def _resample(self, x: Tensor) -> Tensor:
        if self.resample == "down":
            return F.avg_pool2d(x, kernel_size=2, stride=2)
        if self.resample == "up":
            return F.interpolate(x, scale_factor=2.0, mode="nearest")
        return x

    def forward(self, x: Tensor, t_emb: Tensor, a_emb: Tensor) -> Tensor:
        """x: (B, C_in, H, W); t_emb, a_emb: (B, E) -> (B, C_out, H', W')."""
        if self.resample is not None:
            h = self._resample(self.in_layers[1](self.in_layers[0](x)))
            x = self._resample(x)
            h = self.in_layers[2](h)
        else:
            h = self.in_layers(x)
        scale, shift = self.t_emb_layers(t_emb).to(h.dtype)[..., None, None].chunk(2, 1)
        h = self.out_layers[0](h) * (1 + scale) + shift
        a_scale, a_shift = self.audio_emb_layers(a_emb)[..., None, None].chunk(2, 1)
        h = h * (1 + a_scale) + a_shift
        h = self.out_layers[3](self.out_layers[2](self.out_layers[1](h)))  # SiLU, dropout, conv
        return self.skip_connection(x) + h


def legacy_attention(qkv: Tensor, num_heads: int) -> Tensor:
    """Multi-head attention over (B, 3·C, L) in the legacy layout (per head: [q, k, v] of C/heads).

    q and k are each scaled by ch^(-1/4); the softmax runs in float32. Returns (B, C, L).
    """
    bs, width, length = qkv.shape
    ch = width // (3 * num_heads)
    q, k, v = qkv.reshape(bs * num_heads, ch * 3, length).split(ch, dim=1)
    scale = 1 / math.sqrt(math.sqrt(ch))
    weight = torch.einsum("bct,bcs->bts", q * scale, k * scale)
    weight = torch.softmax(weight.float(), dim=-1).to(weight.dtype)
    return torch.einsum("bts,bcs->bct", weight, v).reshape(bs, -1, length)


class AttentionBlock(nn.Module):
    """GN -> 1x1 qkv -> legacy multi-head attention -> 1x1 proj_out, + residual. (B, C, H, W)."""

    def __init__(self, channels: int, num_heads: int, groups: int = 32) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.norm = nn.GroupNorm(groups, channels)
        self.qkv = nn.Conv1d(channels, 3 * channels, 1)
        self.proj_out = nn.Conv1d(channels, channels, 1)

    def forward(
        self, x: Tensor, t_emb: Tensor | None = None, a_emb: Tensor | None = None
    ) -> Tensor:
        shape = x.shape
        x = x.reshape(shape[0], shape[1], -1)  # -> (B, C, H*W)
        h = self.proj_out(legacy_attention(self.qkv(self.norm(x)), self.num_heads))
        return (x + h).reshape(shape)


class InputConv(nn.Conv2d):
    """The first 3x3 convolution, callable like the conditioned blocks (the embeddings are unused)."""

    def forward(
        self, x: Tensor, t_emb: Tensor | None = None, a_emb: Tensor | None = None
    ) -> Tensor:  # type: ignore[override]
        return self._conv_forward(x, self.weight, self.bias)


class CondSequential(nn.Sequential):
    """Runs its layers in order, handing the embeddings to every layer (one signature, scriptable)."""

    def forward(self, x: Tensor, t_emb: Tensor, a_emb: Tensor) -> Tensor:  # type: ignore[override]
        for layer in self:
            x = layer(x, t_emb, a_emb)
        return x


class DiffusedHeadsUNet(nn.Module):
    """eps ‖ v prediction for one frame, conditioned on identity, motion frames and an audio window.

    Built from ``DiffusedHeadsUNetConfig``; see the module docstring for the layout.
    """

    def __init__(self, cfg: DiffusedHeadsUNetConfig) -> None:
        super().__init__()
        self.cfg = cfg
        mc, groups = cfg.model_channels, cfg.num_groups
        emb = 4 * mc
        attn_ds = {cfg.image_size // r for r in cfg.attention_resolutions}

        def heads(ch: int) -> int:
            if cfg.num_head_channels == -1:
                return cfg.num_heads
            if ch % cfg.num_head_channels:
                raise ValueError(
                    f"{ch} channels are not divisible by num_head_channels={cfg.num_head_channels}"
                )
            return ch // cfg.num_head_channels

        def res(ch_in: int, ch_out: int | None = None, resample: str | None = None) -> CondResBlock:
            return CondResBlock(ch_in, emb, cfg.dropout, ch_out, resample, groups)

        self.time_embed = TimestepEmbedding(mc)
        self.audio_embed = nn.Sequential(
            nn.Linear(mc * cfg.audio_window, emb), nn.SiLU(), nn.Linear(emb, emb)
        )
        ch = int(cfg.channel_mult[0] * mc)
        self.input_blocks = nn.ModuleList(
            [CondSequential(InputConv(cfg.input_channels, ch, 3, padding=1))]
        )
        skip_chans, ds = [ch], 1
        for level, mult in enumerate(cfg.channel_mult):
            for _ in range(cfg.num_res_blocks):
                layers: list[nn.Module] = [res(ch, int(mult * mc))]
                ch = int(mult * mc)
                if ds in attn_ds:
                    layers.append(AttentionBlock(ch, heads(ch), groups))
                self.input_blocks.append(CondSequential(*layers))
                skip_chans.append(ch)
            if level != len(cfg.channel_mult) - 1:
                self.input_blocks.append(CondSequential(res(ch, ch, "down")))
                skip_chans.append(ch)
                ds *= 2
        self.middle_block = CondSequential(res(ch), AttentionBlock(ch, heads(ch), groups), res(ch))
        self.output_blocks = nn.ModuleList()
        for level, mult in list(enumerate(cfg.channel_mult))[::-1]:
            for i in range(cfg.num_res_blocks + 1):
                layers = [res(ch + skip_chans.pop(), int(mc * mult))]
                ch = int(mc * mult)
                if ds in attn_ds:
                    layers.append(AttentionBlock(ch, heads(ch), groups))
                if level and i == cfg.num_res_blocks:
                    layers.append(res(ch, ch, "up"))
                    ds //= 2
                self.output_blocks.append(CondSequential(*layers))
        self.out = nn.Sequential(
            nn.GroupNorm(groups, ch), nn.SiLU(), nn.Conv2d(ch, cfg.out_channels, 3, padding=1)
        )
        self._zero_init()

    def _zero_init(self) -> None:
        """Official initialisation: the last conv of every block and of the head start at zero."""
        last = [m.out_layers[3] for m in self.modules() if isinstance(m, CondResBlock)]
        last += [m.proj_out for m in self.modules() if isinstance(m, AttentionBlock)]
        with torch.no_grad():
            for module in [*last, self.out[2]]:
                for p in module.parameters():
                    p.zero_()

    def embed(
        self, timesteps: Tensor, audio_emb: Tensor, dtype: torch.dtype
    ) -> tuple[Tensor, Tensor]:
        """Timestep and audio-window embeddings: (B,), (B, 2n+1, C) -> (B, 4C), (B, 4C)."""
        return self.time_embed(timesteps, dtype), self.audio_embed(
            audio_emb.reshape(audio_emb.shape[0], -1)
        )

    def forward(
        self,
        x_t: Tensor,
        timesteps: Tensor,
        x_cond: Tensor,
        motion_frames: Tensor,
        audio_emb: Tensor,
    ) -> Tensor:
        """Predict eps ‖ v.

        Args:
            x_t: (B, 3, S, S) noisy frame.
            timesteps: (B,) original integer timesteps in [0, T).
            x_cond: (B, 3, S, S) identity frame in [-1, 1].
            motion_frames: (B, n·3, S, S) previous frames, oldest first.
            audio_emb: (B, 2n+1, C) audio embeddings around the current frame.
        Returns:
            (B, 6, S, S): eps (channels 0-2) ‖ v (channels 3-5).
        """
        t_emb, a_emb = self.embed(timesteps, audio_emb, x_t.dtype)
        h = torch.cat([x_t, motion_frames, x_cond], dim=1)
        skips = []
        for block in self.input_blocks:
            h = block(h, t_emb, a_emb)
            skips.append(h)
        h = self.middle_block(h, t_emb, a_emb)
        for block in self.output_blocks:
            h = block(torch.cat([h, skips.pop()], dim=1), t_emb, a_emb)
        return self.out(h)
