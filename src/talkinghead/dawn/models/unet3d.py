"""A2V-FDM denoiser: the 3D UNet that predicts eps for latent flow videos (paper Sec. 3.2).

dawn_spec.md §2.3.2 / §4. Input: the noisy latent ``x`` (B, 3, F, h, w) = (flow_x, flow_y,
occlusion * 2 - 1), the timestep, the per-frame condition (B, F, audio + pose + eye) and the
frame-invariant source features (B, 256 + 16, h, w) = LFG encoder feature + face-location embedding.

The official code repeats the source features over frames, concatenates them with ``x`` and runs the
first 1x7x7 convolution on 275 channels for every frame. Convolution is linear, so here the weight is
split: the 3 latent channels are convolved per frame and the 272 source channels once per call (or
once per video via :meth:`UNet3D.precompute_source`), then broadcast over frames. Same result,
~28% less compute per UNet call at the official width (§6).

State-dict keys equal the official ``denoise_fn.*`` keys without the prefix, except the constant
rotary ``freqs`` copies (recomputed by the stateless :class:`~.rotary.RotaryEmbedding`).
"""

from __future__ import annotations

import itertools
import re

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import Tensor, nn

from talkinghead.dawn.configs import UNet3DConfig
from talkinghead.dawn.models.conv3d import Conv3d
from talkinghead.dawn.models.layers3d import (
    ATTENTION_MODES,
    PreNorm,
    Residual,
    ResnetBlock,
    SinusoidalPosEmb,
    SpatialAttention,
    SpatialLinearAttention,
    TemporalAttention,
    TemporalContext,
)
from talkinghead.dawn.models.local_attention import band_mask, banded_block_size
from talkinghead.dawn.models.relative_position import RelativePositionBias, dense_bias
from talkinghead.dawn.models.rotary import RotaryEmbedding


class UNet3D(nn.Module):
    """eps-prediction UNet over (B, 3, F, h, w) latent flow videos; built from one UNet3DConfig."""

    def __init__(self, cfg: UNet3DConfig) -> None:
        super().__init__()
        if cfg.attention not in ATTENTION_MODES:
            raise ValueError(f"attention={cfg.attention!r} must be one of {ATTENTION_MODES}")
        if cfg.init_kernel_size % 2 == 0:
            raise ValueError(f"init_kernel_size={cfg.init_kernel_size} must be odd")
        self.cfg = cfg
        dim, heads, dh = cfg.dim, cfg.attn_heads, cfg.attn_dim_head
        dims = [dim, *(dim * m for m in cfg.dim_mults)]
        in_out = list(itertools.pairwise(dims))
        time_dim = dim * 4

        self.rotary = RotaryEmbedding(min(32, dh))  # one instance, as the official shares it
        self.time_rel_pos_bias = RelativePositionBias(
            heads, cfg.rel_pos_buckets, cfg.rel_pos_max_distance
        )
        pad = cfg.init_kernel_size // 2
        k = cfg.init_kernel_size
        self.init_conv = Conv3d(cfg.in_channels, dim, (1, k, k), padding=(0, pad, pad))
        self.init_temporal_attn = self._temporal(dim)
        self.time_mlp = nn.Sequential(
            SinusoidalPosEmb(dim),
            nn.Linear(dim, time_dim),
            nn.GELU(),
            nn.Linear(time_dim, time_dim),
        )

        def block(d_in: int, d_out: int, conditioned: bool = True) -> ResnetBlock:
            return ResnetBlock(
                d_in,
                d_out,
                groups=cfg.resnet_groups,
                cross_heads=cfg.cross_attn_heads,
                cross_dim_head=cfg.cross_attn_dim_head,
                time_emb_dim=time_dim if conditioned else None,
                cond_dims=(cfg.audio_dim, cfg.pose_dim, cfg.eye_dim) if conditioned else None,
            )

        def linear_attn(d: int) -> Residual:
            return Residual(PreNorm(d, SpatialLinearAttention(d, heads, dh)))

        self.downs = nn.ModuleList()
        for i, (d_in, d_out) in enumerate(in_out):
            last = i == len(in_out) - 1
            down = Conv3d(d_out, d_out, (1, 4, 4), (1, 2, 2), (0, 1, 1))
            self.downs.append(
                nn.ModuleList(
                    [
                        block(d_in, d_out),
                        block(d_out, d_out),
                        linear_attn(d_out),
                        self._temporal(d_out),
                        nn.Identity() if last else down,
                    ]
                )
            )
        mid = dims[-1]
        self.mid_block1 = block(mid, mid)
        self.mid_spatial_attn = Residual(PreNorm(mid, SpatialAttention(mid, heads, dh)))
        self.mid_temporal_attn = self._temporal(mid)
        self.mid_block2 = block(mid, mid)
        self.ups = nn.ModuleList()
        for i, (d_in, d_out) in enumerate(reversed(in_out)):
            last = i == len(in_out) - 1
            up = nn.ConvTranspose3d(d_in, d_in, (1, 4, 4), (1, 2, 2), (0, 1, 1))
            self.ups.append(
                nn.ModuleList(
                    [
                        block(d_out * 2, d_in),
                        block(d_in, d_in),
                        linear_attn(d_in),
                        self._temporal(d_in),
                        nn.Identity() if last else up,
                    ]
                )
            )
        grid_channels = cfg.latent_channels - 1
        self.final_conv = nn.Sequential(block(dim * 2, dim, False), Conv3d(dim, grid_channels, 1))
        self.occlusion_map = nn.Sequential(block(dim * 2, dim, False), Conv3d(dim, 1, 1))

    def _temporal(self, d: int) -> Residual:
        return Residual(
            PreNorm(d, TemporalAttention(d, self.cfg.attn_heads, self.cfg.attn_dim_head))
        )

    # -- source features -------------------------------------------------------------------------

    def precompute_source(self, source: Tensor) -> Tensor:
        """First-conv response of the frame-invariant channels, bias included.

        Args:
            source: (B, feature_channels + face_loc_channels, h, w) = cat(LFG feature, face-loc emb).
        Returns:
            (B, dim, h, w); pass it as ``source_emb`` to :meth:`forward` for every step of a video.
        """
        n_src = self.cfg.in_channels - self.cfg.latent_channels
        if source.dim() != 4 or source.shape[1] != n_src:
            raise ValueError(f"source must be (B, {n_src}, h, w), got {tuple(source.shape)}")
        weight = self.init_conv.weight[:, self.cfg.latent_channels :, 0]  # (dim, n_src, k, k)
        return F.conv2d(source, weight, self.init_conv.bias, padding=self.init_conv.padding[1:])

    def _init_conv(self, x: Tensor, source_emb: Tensor) -> Tensor:
        b = x.shape[0]
        weight = self.init_conv.weight[:, : self.cfg.latent_channels, 0]
        frames = F.conv2d(
            rearrange(x, "b c f h w -> (b f) c h w"), weight, padding=self.init_conv.padding[1:]
        )
        return rearrange(frames, "(b f) c h w -> b c f h w", b=b) + source_emb[:, :, None]

    # -- forward ---------------------------------------------------------------------------------

    def temporal_context(
        self, num_frames: int, *, window: int | None, mode: str, dtype: torch.dtype
    ) -> TemporalContext:
        """Rotary angles and relative-bias table for ``num_frames`` frames (shared by all layers)."""
        if mode not in ATTENTION_MODES:
            raise ValueError(f"attention={mode!r} must be one of {ATTENTION_MODES}")
        span = num_frames - 1 if window is None or mode == "full" else min(window, num_frames - 1)
        table = self.time_rel_pos_bias.offset_table(span).to(dtype)
        cos, sin = self.rotary.cos_sin(num_frames, device=table.device, dtype=dtype)
        dense = dense_bias(table, num_frames, window) if mode == "full" else None
        block = banded_block_size(num_frames, window) if mode == "local" else None
        band = (
            band_mask(table, window, block, dtype)
            if block is not None and window is not None
            else None
        )
        return TemporalContext(
            cos=cos,
            sin=sin,
            bias_table=table,
            window=window,
            mode=mode,
            dense_bias=dense,
            band_mask=band,
        )

    def forward(
        self,
        x: Tensor,
        t: Tensor,
        cond: Tensor,
        source: Tensor | None = None,
        *,
        source_emb: Tensor | None = None,
        null_cond: bool = False,
        null_cond_mask: Tensor | None = None,
        window: int | None = None,
        attention: str | None = None,
    ) -> Tensor:
        """Predict eps.

        Args:
            x: (B, 3, F, h, w) noisy latent.
            t: (B,) diffusion timesteps (int or float, raw 0..999).
            cond: (B, F, audio_dim + pose_dim + eye_dim) per-frame condition.
            source: (B, feature_channels + face_loc_channels, h, w); or instead
            source_emb: (B, dim, h, w) from :meth:`precompute_source` (cached per video).
            null_cond: replace the whole condition by the null (zero) condition (classifier-free
                guidance's unconditional pass; official ``null_cond_prob=1``).
            null_cond_mask: (B, F) bool, True where a frame's condition is replaced by zeros
                (training-time condition dropout; draw it with a generator outside).
            window: temporal attention half-width override (default ``cfg.window``).
            attention: "local" or "full" override (default ``cfg.attention``).
        Returns:
            (B, 3, F, h, w) predicted noise: (flow_x, flow_y, occlusion).
        """
        if (source is None) == (source_emb is None):
            raise ValueError("pass exactly one of source or source_emb")
        if x.dim() != 5 or x.shape[1] != self.cfg.latent_channels:
            raise ValueError(
                f"x must be (B, {self.cfg.latent_channels}, F, h, w), got {tuple(x.shape)}"
            )
        b, _, f, h, w = x.shape
        if cond.shape != (b, f, self.cfg.cond_dim):
            raise ValueError(
                f"cond must be (B, F, {self.cfg.cond_dim}) = {(b, f, self.cfg.cond_dim)}, "
                f"got {tuple(cond.shape)}"
            )
        if source_emb is None:
            assert source is not None
            source_emb = self.precompute_source(source)
        if source_emb.shape != (b, self.cfg.dim, h, w):
            raise ValueError(
                f"source_emb must be {(b, self.cfg.dim, h, w)}, got {tuple(source_emb.shape)}"
            )
        if t.dim() == 0:
            t = t.expand(b)
        cond = self._apply_null_cond(cond, null_cond, null_cond_mask)
        ctx = self.temporal_context(
            f,
            window=self.cfg.window if window is None else window,
            mode=attention or self.cfg.attention,
            dtype=x.dtype,
        )

        x = self._init_conv(x, source_emb)
        r = x
        x = self.init_temporal_attn(x, ctx=ctx)
        # the sinusoid is computed in float32 (exact timesteps); the MLP runs in the model's dtype
        temb = self.time_mlp[1:](self.time_mlp[0](t).to(self.time_mlp[1].weight.dtype))
        skips = []
        for block1, block2, spatial_attn, temporal_attn, downsample in self.downs:
            x = block2(block1(x, temb, cond), temb, cond)
            x = temporal_attn(spatial_attn(x), ctx=ctx)
            skips.append(x)
            x = downsample(x)
        x = self.mid_block1(x, temb, cond)
        x = self.mid_temporal_attn(self.mid_spatial_attn(x), ctx=ctx)
        x = self.mid_block2(x, temb, cond)
        for block1, block2, spatial_attn, temporal_attn, upsample in self.ups:
            x = torch.cat((x, skips.pop()), dim=1)
            x = block2(block1(x, temb, cond), temb, cond)
            x = upsample(temporal_attn(spatial_attn(x), ctx=ctx))
        x = torch.cat((x, r), dim=1)
        return torch.cat((self.final_conv(x), self.occlusion_map(x)), dim=1)

    @staticmethod
    def _apply_null_cond(cond: Tensor, null_cond: bool, mask: Tensor | None) -> Tensor:
        if null_cond:
            return torch.zeros_like(cond)
        if mask is None:
            return cond
        if mask.shape != cond.shape[:2]:
            raise ValueError(
                f"null_cond_mask must be (B, F) = {tuple(cond.shape[:2])}, got {tuple(mask.shape)}"
            )
        return cond.masked_fill(mask[..., None].bool(), 0.0)


_ROTARY_KEY = re.compile(r"(^|\.)rotary_emb\.freqs$")


def strip_official_extras(state_dict: dict[str, Tensor]) -> dict[str, Tensor]:
    """Drop what the official state dict holds beyond ours: the constant rotary ``freqs`` copies."""
    return {k: v for k, v in state_dict.items() if not _ROTARY_KEY.search(k)}


def config_from_state_dict(sd: dict[str, Tensor], **overrides: object) -> UNet3DConfig:
    """UNet3DConfig read off the tensor shapes of a (prefix-free) UNet state dict.

    Not recoverable from shapes, so taken from the defaults unless overridden: ``resnet_groups``,
    ``rel_pos_max_distance``, ``window``, ``attention`` and the split of the source channels into
    ``feature_channels`` / ``face_loc_channels`` (only their sum matters to the UNet).
    """
    dim = sd["init_conv.weight"].shape[0]
    levels = sorted({int(m.group(1)) for k in sd if (m := re.match(r"downs\.(\d+)\.", k))})
    mults = tuple(sd[f"downs.{i}.0.block1.proj.weight"].shape[0] // dim for i in levels)
    buckets, heads = sd["time_rel_pos_bias.relative_attention_bias.weight"].shape
    inner = sd["init_temporal_attn.fn.fn.fn.to_qkv.weight"].shape[0] // 3
    latent = sd["final_conv.1.weight"].shape[0] + sd["occlusion_map.1.weight"].shape[0]
    in_channels = sd["init_conv.weight"].shape[1]
    ca = "downs.0.0.cross_attn_aud"
    cross_dim_head = sd[f"{ca}.null_kv"].shape[1]
    face_loc = int(overrides.get("face_loc_channels", UNet3DConfig.face_loc_channels))  # type: ignore[arg-type]
    values: dict[str, object] = {
        "dim": dim,
        "dim_mults": mults,
        "latent_channels": latent,
        "feature_channels": in_channels - latent - face_loc,
        "face_loc_channels": face_loc,
        "audio_dim": sd["downs.0.0.audio_mlp.1.weight"].shape[1],
        "pose_dim": sd["downs.0.0.pose_mlp.1.weight"].shape[1],
        "eye_dim": sd["downs.0.0.eye_mlp.1.weight"].shape[1],
        "attn_heads": heads,
        "attn_dim_head": inner // heads,
        "cross_attn_heads": sd[f"{ca}.to_q.weight"].shape[0] // cross_dim_head,
        "cross_attn_dim_head": cross_dim_head,
        "init_kernel_size": sd["init_conv.weight"].shape[-1],
        "rel_pos_buckets": buckets,
    }
    values.update(overrides)
    return UNet3DConfig(**values)  # type: ignore[arg-type]
