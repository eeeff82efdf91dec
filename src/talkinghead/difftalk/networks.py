"""DiffTalk's first stage and denoiser, built from diffusers classes that express them exactly.

* First stage: LDM's VQ autoencoder (``VQModelInterface``; spec §2.4, MANIFEST quirks 12-14) is
  diffusers' ``VQModel``: the same ResnetBlocks (GroupNorm eps 1e-6, SiLU), asymmetric-pad stride-2
  Downsample, nearest x2 Upsample, one single-head mid attention, ``num_res_blocks + 1`` decoder
  blocks per level, 1x1 ``quant_conv`` / ``post_quant_conv`` and a legacy ``VectorQuantizer``
  (straight-through ``z + (z_q - z)``). ``encode`` does not quantise; ``decode`` does.
* Denoiser: LDM's ``UNetModel`` with ``use_spatial_transformer`` (spec §3.2, quirks 1-8) is diffusers'
  ``UNet2DConditionModel``: ``[cos, sin]`` timestep embedding, additive time in the ResBlocks
  (GroupNorm eps 1e-5), SpatialTransformers with 1x1-conv projections (GroupNorm eps 1e-6),
  bias-free q/k/v, exact-GELU GEGLU feed-forward, symmetric stride-2 Downsample. diffusers calls the
  number of heads ``attention_head_dim`` (its documented legacy naming), so heads = C / 32 goes there.

The condition encoders are our own modules (``conditioning.py``): diffusers has no equivalent.
"""

from __future__ import annotations

import torch
from diffusers import UNet2DConditionModel, VQModel
from torch import Tensor

from talkinghead.difftalk.configs import DiffTalkUNetConfig, DiffTalkVQConfig


def build_first_stage(cfg: DiffTalkVQConfig) -> VQModel:
    """The VQ autoencoder of ``cfg`` (random weights): images (B, 3, H, W) <-> latents (B, 3, H/f, W/f)."""
    levels = len(cfg.channel_mult)
    return VQModel(
        in_channels=cfg.image_channels,
        out_channels=cfg.image_channels,
        down_block_types=("DownEncoderBlock2D",) * levels,
        up_block_types=("UpDecoderBlock2D",) * levels,
        block_out_channels=tuple(cfg.base_channels * m for m in cfg.channel_mult),
        layers_per_block=cfg.num_res_blocks,
        act_fn="silu",
        latent_channels=cfg.latent_channels,
        num_vq_embeddings=cfg.num_embeddings,
        norm_num_groups=cfg.norm_groups,
        vq_embed_dim=cfg.latent_channels,
        scaling_factor=1.0,  # LDM scale_factor 1.0 (scale_by_std false)
    )


def build_denoiser(cfg: DiffTalkUNetConfig) -> UNet2DConditionModel:
    """The eps-prediction UNet of ``cfg`` (random weights).

    forward: ``(x (B, in_channels, h, w), t (B,) int64, encoder_hidden_states (B, 1, context_dim))``.
    """
    if len(cfg.attention_levels) != len(cfg.channel_mult):
        raise ValueError("attention_levels needs one entry per channel_mult level")
    channels = cfg.block_channels
    if any(c % cfg.head_channels for c in channels):
        raise ValueError(f"block channels {channels} must be multiples of {cfg.head_channels}")
    down = tuple("CrossAttnDownBlock2D" if a else "DownBlock2D" for a in cfg.attention_levels)
    up = tuple("CrossAttnUpBlock2D" if a else "UpBlock2D" for a in reversed(cfg.attention_levels))
    return UNet2DConditionModel(
        in_channels=cfg.in_channels,
        out_channels=cfg.out_channels,
        flip_sin_to_cos=True,  # LDM timestep_embedding is [cos, sin]
        freq_shift=0,
        down_block_types=down,
        mid_block_type="UNetMidBlock2DCrossAttn",
        up_block_types=up,
        block_out_channels=channels,
        layers_per_block=cfg.num_res_blocks,
        downsample_padding=1,
        act_fn="silu",
        norm_num_groups=cfg.norm_groups,
        norm_eps=1e-5,
        cross_attention_dim=cfg.context_dim,
        attention_head_dim=tuple(c // cfg.head_channels for c in channels),  # = number of heads
        use_linear_projection=False,  # 1x1 conv proj_in / proj_out
    )


def encode_images(first_stage: VQModel, images: Tensor) -> Tensor:
    """Continuous (pre-quantisation) latents: images (B, 3, H, W) in [-1, 1] -> (B, 3, H/f, W/f)."""
    return first_stage.encode(images).latents


def decode_latents(first_stage: VQModel, latents: Tensor, *, quantize: bool = True) -> Tensor:
    """latents (B, 3, h, w) -> images (B, 3, f h, f w), roughly [-1, 1]; quantised first as the official."""
    return first_stage.decode(latents, force_not_quantize=not quantize).sample


def predict_eps(
    unet: UNet2DConditionModel,
    z_t: Tensor,
    t: Tensor,
    z_masked: Tensor,
    z_reference: Tensor,
    context: Tensor,
) -> Tensor:
    """The official DiffusionWrapper: input [z_t | masked-frame latent | reference latent].

    Args:
        z_t: (B, 3, h, w) noisy latent; t: (B,) int64 times; z_masked, z_reference: (B, 3, h, w);
        context: (B, 1, context_dim) from ``ConditionEncoder``.
    Returns:
        eps: (B, 3, h, w).
    """
    x = torch.cat([z_t, z_masked, z_reference], dim=1)  # -> (B, 9, h, w)
    return unet(x, t, encoder_hidden_states=context, return_dict=False)[0]
