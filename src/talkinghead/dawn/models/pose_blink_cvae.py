"""PoseBlinkCVAE = PBNet (paper Sec. 3.3): transformer CVAE from audio features to head pose or blink deltas.

Re-implements the official ``CVAE(Encoder_TRANSFORMERREEMB5, Decoder_TRANSFORMERREEMB5)`` (dawn_spec.md §2.2,
§3.4). Two instances are used: the pose net (``motion_dim=6``: yaw, pitch, roll, scale, tx, ty, min-max
normalised by :func:`normalize_pose`) and the blink net (``motion_dim=2``: raw eye-openness ratios). Both output
the per-frame *delta* w.r.t. the initial (reference-frame) state.

Decoder (the only part used at inference): memory ``m_t = W[emb(init), z_t, emb(audio_t)]``; queries start
from ``init_proj(0)``, go through a pre-norm rotary self-attention and ``num_layers`` post-norm decoder layers
(self-attention, cross-attention to ``m``, GELU FFN), each attention with a T5 relative position bias that in
eval mode masks ``|i - j| > eval_window`` (official: 200). Encoder (training only): standard
``nn.TransformerEncoder`` over ``[emb(x_0), emb(x_t - x_0), emb(audio_t)]`` + sinusoidal positions, giving a
per-frame Gaussian posterior.

State-dict keys are the official ones (``encoder.*``, ``decoder.*``) except two deterministic tables that are
recomputed instead of stored: ``{encoder,decoder}.sequence_pos_encoder.pe`` and the five rotary
``decoder.*.rotary_emb.freqs`` copies (:func:`strip_official_only_keys` drops them from an official state dict).
:func:`config_from_state_dict` and :func:`config_from_opt_yaml` recover the architecture from official files.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import replace
from typing import Any

import torch
from einops import rearrange
from torch import Tensor, nn

from talkinghead.dawn.configs import PoseBlinkConfig
from talkinghead.dawn.models.layers3d import ChannelLayerNorm, PreNorm, Residual
from talkinghead.dawn.models.pose_blink_layers import (
    DecoderStack,
    RotaryAttention,
    sinusoidal_positions,
)
from talkinghead.dawn.models.relative_position import RelativePositionBias
from talkinghead.dawn.models.rotary import RotaryEmbedding, rotary_frequencies

logger = logging.getLogger(__name__)

POSE_MIN = (-90.0, -90.0, -90.0, 0.0, 0.0, 0.0)  # yaw, pitch, roll (deg), scale, tx, ty (px)
POSE_MAX = (90.0, 90.0, 90.0, 1.0, 720.0, 1080.0)
FULL_ATTENTION_MAX_FRAMES = 1024  # beyond this, eval-mode decoding switches to banded attention


def normalize_pose(pose: Tensor) -> Tensor:
    """Raw pose (..., 6) -> [0, 1]-ish units the pose net works in: ``(p - min) / (max - min)``."""
    lo, hi = _pose_bounds(pose)
    return (pose - lo) / (hi - lo)


def denormalize_pose(pose: Tensor) -> Tensor:
    """Inverse of :func:`normalize_pose`: ``p * (max - min) + min``; pose: (..., 6)."""
    lo, hi = _pose_bounds(pose)
    return pose * (hi - lo) + lo


def _pose_bounds(pose: Tensor) -> tuple[Tensor, Tensor]:
    if pose.shape[-1] != len(POSE_MIN):
        raise ValueError(f"pose has {pose.shape[-1]} channels in its last axis, expected 6.")
    lo = torch.tensor(POSE_MIN, dtype=pose.dtype, device=pose.device)
    hi = torch.tensor(POSE_MAX, dtype=pose.dtype, device=pose.device)
    return lo, hi


def _randn(
    shape: tuple[int, ...] | torch.Size, generator: torch.Generator | None, like: Tensor
) -> Tensor:
    """Standard normal draws of ``like``'s device and dtype, drawn in float32 on the generator's
    device: ``randn`` in bfloat16 / float16 is a different stream, and a seed must give the same
    motion in every dtype (float32 draws are unchanged)."""
    where = generator.device if generator is not None else like.device
    z = torch.randn(tuple(shape), generator=generator, device=where, dtype=torch.float32)
    return z.to(device=like.device, dtype=like.dtype)


class PoseBlinkDecoder(nn.Module):
    """PBNet decoder: (init state, per-frame latents, audio) -> per-frame deltas (dawn_spec.md §2.2)."""

    def __init__(self, cfg: PoseBlinkConfig) -> None:
        super().__init__()
        d, a = cfg.pose_latent_dim, cfg.audio_latent_dim
        self.firstposeEmbedding = nn.Linear(cfg.motion_dim, d)
        self.audioEmbedding = nn.Linear(cfg.audio_dim, a)
        self.ztimelinear = nn.Linear(d + cfg.latent_dim + a, d)
        self.init_proj = nn.Linear(d, d)

        def bias() -> RelativePositionBias:
            return RelativePositionBias(
                cfg.num_heads,
                cfg.num_buckets,
                cfg.max_distance,
                window=cfg.eval_window,
                window_eval_only=True,
            )

        self.time_rel_pos_bias_tgt, self.time_rel_pos_bias_mem = bias(), bias()
        # official: one RotaryEmbedding for the first attention, another shared by all decoder layers;
        # both are the same deterministic function here
        rotary = RotaryEmbedding(cfg.rotary_dim)
        attn = RotaryAttention(d, cfg.num_heads, cfg.dim_head, rotary, fused_qkv=True)
        self.init_temporal_attn = Residual(PreNorm(d, attn, ChannelLayerNorm(d, axis=-1, ndim=3)))
        self.seqTransDecoder = DecoderStack(cfg, rotary)
        self.finallayer = nn.Linear(d, cfg.motion_dim)
        self.eval_window = cfg.eval_window

    def forward(
        self, init: Tensor, audio: Tensor, z: Tensor, mask: Tensor, attn_chunk: int | None = None
    ) -> Tensor:
        """init: (B, >=1, D) (frame 0 is used), audio: (B, T, A), z: (T, B, latent), mask: (B, T) bool
        -> (B, T, D) deltas, zero on padded frames. ``attn_chunk``: see :meth:`PoseBlinkCVAE.decode`."""
        b, t = mask.shape
        ref = self.firstposeEmbedding(init[:, :1]).expand(b, t, -1)  # -> (B, T, d)
        memory = self.ztimelinear(
            torch.cat([ref, rearrange(z, "t b c -> b t c"), self.audioEmbedding(audio)], dim=-1)
        )
        # the official queries start from zeros, so init_proj contributes only its bias
        queries = self.init_proj(memory.new_zeros(b, t, memory.shape[-1]))
        band = self._band(t, attn_chunk)
        bias_tgt, bias_mem = (
            module(t, device=audio.device)
            if band is None
            else module.offset_table(band[0], audio.device)
            for module in (self.time_rel_pos_bias_tgt, self.time_rel_pos_bias_mem)
        )
        queries = self.init_temporal_attn(queries, memory=None, bias=bias_tgt, band=band)
        for layer in self.seqTransDecoder.decoder_layers:
            queries = layer(queries, memory, bias_tgt, bias_mem, band)
        return self.finallayer(queries).masked_fill(~mask[..., None], 0.0)

    def _band(self, t: int, attn_chunk: int | None) -> tuple[int, int | None] | None:
        """(window, query block) of the banded path, or None for full attention."""
        banded_ok = self.time_rel_pos_bias_tgt.masks_now and self.time_rel_pos_bias_mem.masks_now
        if attn_chunk is None:
            if not (banded_ok and t > FULL_ATTENTION_MAX_FRAMES):
                return None
            logger.debug("decoding %d frames with banded attention (exact)", t)
            # local_attention's own query block (~window frames, at most 64)
            return self.eval_window, None
        if attn_chunk <= 0:
            return None
        if not banded_ok:
            raise ValueError(
                "banded attention (attn_chunk > 0) is exact only in eval mode with eval_window set."
            )
        return self.eval_window, min(attn_chunk, t)


class PoseBlinkEncoder(nn.Module):
    """PBNet encoder (training only): per-frame posterior ``q(z_t | x, audio)`` (dawn_spec.md §2.2)."""

    def __init__(self, cfg: PoseBlinkConfig) -> None:
        super().__init__()
        d, a = cfg.pose_latent_dim, cfg.audio_latent_dim
        width = a + 2 * d
        self.mu_layer = nn.Linear(width, a)
        self.sigma_layer = nn.Linear(width, a)
        self.poseEmbedding = nn.Linear(cfg.motion_dim, d)
        self.firstposeEmbedding = nn.Linear(cfg.motion_dim, d)
        self.audioEmbedding = nn.Linear(cfg.audio_dim, a)
        self.pos_dropout = nn.Dropout(cfg.dropout)
        layer = nn.TransformerEncoderLayer(
            width, cfg.num_heads, cfg.ff_size, cfg.dropout, activation="gelu"
        )
        self.seqTransEncoder = nn.TransformerEncoder(
            layer, cfg.num_layers, enable_nested_tensor=False
        )

    def forward(self, x: Tensor, audio: Tensor, mask: Tensor) -> tuple[Tensor, Tensor]:
        """x: (B, T, D) absolute states, audio: (B, T, A), mask: (B, T) -> mu, logvar: (T, B, latent)."""
        x = rearrange(x, "b t c -> t b c")
        ref = x[:1]
        tokens = torch.cat(
            [
                self.firstposeEmbedding(ref).expand(x.shape[0], -1, -1),
                self.poseEmbedding(x - ref),
                self.audioEmbedding(rearrange(audio, "b t c -> t b c")),
            ],
            dim=-1,
        )
        pe = sinusoidal_positions(tokens.shape[0], tokens.shape[-1], tokens.device).to(tokens.dtype)
        tokens = self.pos_dropout(tokens + pe[:, None])
        hidden = self.seqTransEncoder(tokens, src_key_padding_mask=~mask)
        return self.mu_layer(hidden), self.sigma_layer(hidden)


class PoseBlinkCVAE(nn.Module):
    """PBNet: ``PoseBlinkCVAE(cfg)``; ``decode`` generates, ``forward`` is the training pass."""

    def __init__(self, cfg: PoseBlinkConfig) -> None:
        super().__init__()
        _validate_config(cfg)
        self.cfg = cfg
        self.encoder = PoseBlinkEncoder(cfg)
        self.decoder = PoseBlinkDecoder(cfg)

    def encode(self, x: Tensor, audio: Tensor, mask: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """Posterior parameters. x: (B, T, D) states (frame 0 = reference), audio: (B, T, A),
        mask: (B, T) bool valid frames (default all). Returns mu, logvar: (T, B, latent)."""
        mask = self._check_inputs(x, audio, mask)
        return self.encoder(x, audio, mask)

    def decode(
        self,
        init: Tensor,
        audio: Tensor,
        z: Tensor | None = None,
        *,
        generator: torch.Generator | None = None,
        mask: Tensor | None = None,
        attn_chunk: int | None = None,
    ) -> Tensor:
        """Generate deltas w.r.t. ``init`` (official ``CAE.generate`` with ``fact=1``).

        Args:
            init: (B, 1, D) initial state (normalised pose or raw blink); only frame 0 of a longer T is used.
            audio: (B, T, A) audio features.
            z: (T, B, latent) latents; default ``torch.randn((T, B, latent), generator=generator)`` (the
                official single draw, same shape and order).
            generator: RNG for ``z``.
            mask: (B, T) bool valid frames (default all); padded frames output 0.
            attn_chunk: query block of the exact banded attention (eval mode only). None: full attention up to
                ``FULL_ATTENTION_MAX_FRAMES`` frames, banded above; 0: always full.
        Returns:
            (B, T, D) per-frame deltas.
        """
        mask = self._check_inputs(init, audio, mask, need_full_length=False)
        b, t = mask.shape
        shape = (t, b, self.cfg.latent_dim)
        if z is None:
            z = _randn(shape, generator, audio)
        elif tuple(z.shape) != shape:
            raise ValueError(f"z has shape {tuple(z.shape)}, expected (T, B, latent) = {shape}.")
        return self.decoder(init, audio, z, mask, attn_chunk)

    def forward(
        self,
        x: Tensor,
        audio: Tensor,
        mask: Tensor | None = None,
        generator: torch.Generator | None = None,
    ) -> tuple[Tensor, Tensor, Tensor]:
        """Training pass: encode, reparameterise, decode.

        Args:
            x: (B, T, D) ground-truth states; frame 0 is the reference.
            audio: (B, T, A); mask: (B, T) bool; generator: RNG of the reparameterisation noise.
        Returns:
            output (B, T, D) predicted deltas ``x - x[:, :1]``, mu and logvar (T, B, latent).
        """
        mask = self._check_inputs(x, audio, mask)
        mu, logvar = self.encoder(x, audio, mask)
        eps = _randn(mu.shape, generator, mu)
        z = mu + eps * torch.exp(logvar / 2)
        return self.decoder(x, audio, z, mask), mu, logvar

    def _check_inputs(
        self, x: Tensor, audio: Tensor, mask: Tensor | None, need_full_length: bool = True
    ) -> Tensor:
        cfg = self.cfg
        if audio.ndim != 3 or audio.shape[-1] != cfg.audio_dim:
            raise ValueError(f"audio must be (B, T, {cfg.audio_dim}), got {tuple(audio.shape)}.")
        b, t = audio.shape[:2]
        if x.ndim != 3 or x.shape[0] != b or x.shape[-1] != cfg.motion_dim or x.shape[1] < 1:
            raise ValueError(f"states must be (B={b}, T, {cfg.motion_dim}), got {tuple(x.shape)}.")
        if need_full_length and x.shape[1] != t:
            raise ValueError(f"states have {x.shape[1]} frames but audio has {t}.")
        if mask is None:
            return torch.ones(b, t, dtype=torch.bool, device=audio.device)
        if mask.shape != (b, t) or mask.dtype != torch.bool:
            raise ValueError(
                f"mask must be a bool (B, T) = ({b}, {t}) tensor, got {mask.dtype} {tuple(mask.shape)}."
            )
        return mask


def _validate_config(cfg: PoseBlinkConfig) -> None:
    if cfg.latent_dim != cfg.audio_latent_dim:
        raise ValueError(
            f"latent_dim={cfg.latent_dim} must equal audio_latent_dim={cfg.audio_latent_dim} "
            "(the encoder's posterior has audio_latent_dim features)."
        )
    if cfg.rotary_dim > cfg.dim_head:
        raise ValueError(f"rotary_dim={cfg.rotary_dim} exceeds dim_head={cfg.dim_head}.")
    if (cfg.audio_latent_dim + 2 * cfg.pose_latent_dim) % cfg.num_heads:
        raise ValueError(
            "audio_latent_dim + 2 * pose_latent_dim must be divisible by num_heads (encoder)."
        )


def strip_official_only_keys(state_dict: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """Drop the deterministic official entries this module recomputes: ``*.sequence_pos_encoder.pe`` and
    ``*.rotary_emb.freqs``. Raises if a dropped ``freqs`` differs from ours (a different rotary setup)."""
    kept: dict[str, Tensor] = {}
    for key, value in state_dict.items():
        if key.endswith(".rotary_emb.freqs"):
            expected = rotary_frequencies(2 * value.numel())
            if not torch.allclose(value.float().cpu(), expected, rtol=1e-6, atol=0.0):
                raise ValueError(
                    f"{key}={value.tolist()} is not the standard RoPE frequency table."
                )
        elif not key.endswith(".sequence_pos_encoder.pe"):
            kept[key] = value
    return kept


def config_from_state_dict(state_dict: Mapping[str, Tensor]) -> PoseBlinkConfig:
    """Architecture of an official (or our) PBNet state dict, read from tensor shapes.

    ``max_distance`` and ``eval_window`` are not visible in weights: they keep the official defaults.
    ``rotary_dim`` comes from the ``rotary_emb.freqs`` keys when present, else the official ``min(32, heads)``.
    """
    sd = state_dict
    try:
        final = sd["decoder.finallayer.weight"]  # (D, d)
        audio = sd["decoder.audioEmbedding.weight"]  # (a, A)
        ztime = sd["decoder.ztimelinear.weight"]  # (d, d + latent + a)
        rel = sd["decoder.time_rel_pos_bias_tgt.relative_attention_bias.weight"]  # (buckets, heads)
        qkv = sd["decoder.init_temporal_attn.fn.fn.to_qkv.weight"]  # (3 h dh, d)
        ff = sd["decoder.seqTransDecoder.decoder_layers.0.ffn.linear1.weight"]  # (ff, d)
    except KeyError as err:
        raise ValueError(f"not a PBNet (transformerreemb5) state dict: missing {err}.") from None
    prefix = "decoder.seqTransDecoder.decoder_layers."
    num_layers = len({k[len(prefix) :].split(".")[0] for k in sd if k.startswith(prefix)})
    heads = rel.shape[1]
    freqs = sd.get("decoder.init_temporal_attn.fn.fn.rotary_emb.freqs")
    pose_latent, audio_latent = final.shape[1], audio.shape[0]
    return PoseBlinkConfig(
        motion_dim=final.shape[0],
        audio_dim=audio.shape[1],
        latent_dim=ztime.shape[1] - pose_latent - audio_latent,
        audio_latent_dim=audio_latent,
        pose_latent_dim=pose_latent,
        ff_size=ff.shape[0],
        num_layers=num_layers,
        num_heads=heads,
        dim_head=qkv.shape[0] // (3 * heads),
        rotary_dim=2 * freqs.numel() if freqs is not None else min(32, heads),
        num_buckets=rel.shape[0],
    )


def config_from_opt_yaml(opt: Mapping[str, Any], motion_dim: int) -> PoseBlinkConfig:
    """Architecture from an official PBNet ``opt.yaml`` dict (already ``yaml.safe_load``-ed).

    ``motion_dim`` is 6 (pose net) or 2 (blink net); the official loader sets it (``pos_dim + eye_dim``) and
    ``audio_dim = 1024`` after reading the file. ``num_heads``, ``pose_latent_dim`` and attention ``dim_head``
    are constructor defaults that opt.yaml does not carry.
    """
    arch = opt.get("archiname", "transformerreemb5")
    if arch != "transformerreemb5":
        raise ValueError(
            f"opt.yaml archiname={arch!r}: only 'transformerreemb5' (the released nets) is supported."
        )
    if opt.get("activation", "gelu") != "gelu":
        raise ValueError(f"opt.yaml activation={opt['activation']!r}: PBNet uses 'gelu'.")
    base = PoseBlinkConfig()
    ints = (
        "audio_dim",
        "latent_dim",
        "audio_latent_dim",
        "pose_latent_dim",
        "ff_size",
        "num_layers",
        "num_heads",
        "num_buckets",
        "max_distance",
    )
    values: dict[str, Any] = {name: int(opt.get(name, getattr(base, name))) for name in ints}
    values["dropout"] = float(opt.get("dropout", base.dropout))
    rotary_dim = min(32, values["num_heads"])  # official RotaryEmbedding(min(32, num_heads))
    return replace(base, motion_dim=motion_dim, rotary_dim=rotary_dim, **values)
