"""DiffTalk configurations: one frozen dataclass per network, plus the family-level settings.

DiffTalk (Shen et al., CVPR 2023; difftalk_spec.md) inpaints the lower face of every video frame in
the latent space of LDM's VQ-f4 autoencoder. Networks and where they are implemented:

* ``DiffTalkVQConfig`` -> diffusers ``VQModel`` (LDM ``VQModelInterface``, spec §2.4).
* ``DiffTalkUNetConfig`` -> diffusers ``UNet2DConditionModel`` (LDM ``openaimodel.UNetModel``, spec §3.2).
* ``DiffTalkConditionConfig`` -> our ``ConditionEncoder`` (AudioNet + AudioAttNet + LdmNet, spec §2.3).
* ``DiffTalkConfig`` -> what the pipeline needs beyond the networks (image size, schedule, masks,
  audio feature); it is the ``config`` of ``model_index.json``.

``PRESETS`` holds the official widths (``"difftalk"``), the reduced widths of the golden test vectors
(``"golden-reduced"``, ../shared/golden/difftalk/MANIFEST.md) and a tiny CPU test model (``"tiny"``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class DiffTalkVQConfig:
    """LDM VQ autoencoder (vq-f4: ch 128, ch_mult 1,2,4, 8192 x 3 codebook), as a diffusers ``VQModel``."""

    image_channels: int = 3  # RGB in and out, pixels in [-1, 1]
    base_channels: int = 128  # ``ch``: channels of the first (full-resolution) level
    channel_mult: tuple[int, ...] = (
        1,
        2,
        4,
    )  # per-level multipliers; downsampling factor 2**(len-1)
    num_res_blocks: int = 2  # ResnetBlocks per encoder level (the decoder has one more)
    latent_channels: int = 3  # ``z_channels`` == ``embed_dim``: channels of the latent
    num_embeddings: int = 8192  # ``n_embed``: codebook entries
    norm_groups: int = 32  # GroupNorm groups (eps 1e-6 everywhere in LDM's autoencoder)

    @property
    def downsampling(self) -> int:
        """Image side / latent side (4 for vq-f4)."""
        return 2 ** (len(self.channel_mult) - 1)


@dataclass(frozen=True)
class DiffTalkUNetConfig:
    """LDM UNet of DiffTalk (in 9 = z_t | masked-frame latent | reference latent, context 128)."""

    in_channels: int = 9  # z_t (3) + masked-image latent (3) + reference latent (3)
    out_channels: int = 3  # predicted eps
    model_channels: int = 256  # channels of the first level
    channel_mult: tuple[int, ...] = (1, 2, 3, 4)  # per-level multipliers (256/512/768/1024)
    num_res_blocks: int = 2  # ResBlocks per down level (up levels have one more)
    # which levels carry a SpatialTransformer; official attention_resolutions [8, 4, 2] are
    # downsampling rates, i.e. every level but the first
    attention_levels: tuple[bool, ...] = (False, True, True, True)
    head_channels: int = 32  # channels per attention head (num_head_channels); heads = C / 32
    context_dim: int = 128  # cross-attention context: audio code (64) | landmark code (64)
    norm_groups: int = 32  # GroupNorm groups (ResBlocks eps 1e-5, SpatialTransformer eps 1e-6)

    @property
    def block_channels(self) -> tuple[int, ...]:
        return tuple(self.model_channels * m for m in self.channel_mult)


@dataclass(frozen=True)
class DiffTalkConditionConfig:
    """Audio (AudioNet + AudioAttNet) and landmark (LdmNet) encoders; output = the UNet context."""

    audio_channels: int = 29  # features per audio step (29 DeepSpeech logits; 80 for log-mel)
    audio_window: int = 16  # audio steps per video frame window (16 at 50 Hz = 0.32 s)
    audio_conv_channels: tuple[int, ...] = (
        32,
        32,
        64,
        64,
    )  # AudioNet stride-2 convs (window 16 -> 1)
    audio_dim: int = 64  # AudioNet output per frame (dim_aud)
    attention_features: int = 32  # AudioAttNet looks at the first 32 of the 64 features
    smooth_frames: int = 8  # consecutive frame windows AudioAttNet weighs (seq_len)
    num_landmarks: int = 39  # upper-face landmarks (68-point indices 0-3 and 13-47)
    landmark_hidden: int = 128  # LdmNet first hidden layer
    landmark_dim: int = 64  # LdmNet output
    leaky_slope: float = 0.02  # LeakyReLU slope of all three encoders

    @property
    def context_dim(self) -> int:
        """Channels of the context token the UNet cross-attends to (audio | landmarks)."""
        return self.audio_dim + self.landmark_dim


@dataclass(frozen=True)
class DiffTalkConfig:
    """Everything of one DiffTalk model: networks, image size, schedule, masks and audio feature."""

    first_stage: DiffTalkVQConfig = field(default_factory=DiffTalkVQConfig)  # VQ autoencoder
    denoiser: DiffTalkUNetConfig = field(default_factory=DiffTalkUNetConfig)  # eps-prediction UNet
    condition: DiffTalkConditionConfig = field(
        default_factory=DiffTalkConditionConfig
    )  # context encoders
    image_size: int = 256  # face crop side in pixels (latent side = image_size / 4)
    num_train_steps: int = 1000  # diffusion steps T
    beta_start: float = 0.0015  # LDM "linear" schedule: betas = linspace(sqrt(b0), sqrt(b1), T)**2
    beta_end: float = 0.0195  # last beta of that schedule
    num_steps: int = 200  # default DDIM steps at inference (official 200, eta 0)
    # audio feature the condition encoder was trained on: "deepspeech" ((N, 16, 29) windows read
    # from a file, official), "logmel" or "hubert" (computed by the toolkit)
    audio_features: str = "deepspeech"
    inference_mask_landmark: int = 33  # row cut of the masked frame at inference (official: 33)
    training_mask_landmark: int = 30  # row cut of the masked frame in training (official: 30)
    reference_min_distance: int = 60  # training: reference frame at least this many frames away

    @property
    def latent_size(self) -> int:
        return self.image_size // self.first_stage.downsampling

    def __post_init__(self) -> None:
        if self.condition.context_dim != self.denoiser.context_dim:
            raise ValueError(
                f"condition context {self.condition.context_dim} != denoiser context_dim "
                f"{self.denoiser.context_dim}"
            )
        if self.image_size % self.first_stage.downsampling:
            raise ValueError(
                f"image_size={self.image_size} must be a multiple of {self.first_stage.downsampling}"
            )
        if self.audio_features not in AUDIO_FEATURES:
            raise ValueError(
                f"audio_features={self.audio_features!r} must be one of {sorted(AUDIO_FEATURES)}"
            )


AUDIO_FEATURES: dict[str, int] = {
    "deepspeech": 29,
    "logmel": 80,
    "hubert": 1024,
}  # name -> channels

_GOLDEN = DiffTalkConfig(
    first_stage=DiffTalkVQConfig(base_channels=32, num_embeddings=256),
    denoiser=DiffTalkUNetConfig(model_channels=32),
    image_size=64,
)
_TINY = DiffTalkConfig(
    first_stage=DiffTalkVQConfig(
        base_channels=8, channel_mult=(1, 2, 2), num_res_blocks=1, num_embeddings=32, norm_groups=4
    ),
    denoiser=DiffTalkUNetConfig(
        model_channels=8,
        channel_mult=(1, 2),
        num_res_blocks=1,
        attention_levels=(False, True),
        head_channels=8,
        context_dim=16,
        norm_groups=4,
    ),
    condition=DiffTalkConditionConfig(
        audio_channels=80,
        audio_conv_channels=(8, 8, 8, 8),
        audio_dim=8,
        attention_features=4,
        landmark_hidden=16,
        landmark_dim=8,
    ),
    image_size=32,
    num_steps=4,
    audio_features="logmel",
)

# The recipe model (scripts/train_difftalk_small.py): 64-px synthetic faces, a 16 x 16 latent, a
# VQ of the vq-f4 architecture at 1/8 width with 1024 codes (0.7 M parameters) and a three-level
# UNet of 64 channels (6.7 M); the condition encoders keep the official widths. 50 DDIM steps by
# default: the recipe measures what 20 and 200 change on held-out clips.
_SMALL = DiffTalkConfig(
    first_stage=DiffTalkVQConfig(
        base_channels=16, channel_mult=(1, 2, 4), num_res_blocks=1, num_embeddings=1024,
        norm_groups=8,
    ),
    denoiser=DiffTalkUNetConfig(
        model_channels=64, channel_mult=(1, 2, 2), num_res_blocks=1,
        attention_levels=(False, True, True),
    ),
    condition=DiffTalkConditionConfig(audio_channels=80),
    image_size=64,
    num_steps=50,
    audio_features="logmel",
)  # fmt: skip

PRESETS: dict[str, DiffTalkConfig] = {
    "difftalk": DiffTalkConfig(),  # official widths (UNet 530 M, VQ-f4 55 M parameters)
    "golden-reduced": _GOLDEN,  # the reduced official model of ../shared/golden/difftalk
    "small": _SMALL,  # trained on the synthetic set in about an hour of 2 CPU cores
    "tiny": _TINY,  # CPU tests: every code path in milliseconds
}

_NESTED: dict[str, type] = {
    "first_stage": DiffTalkVQConfig,
    "denoiser": DiffTalkUNetConfig,
    "condition": DiffTalkConditionConfig,
}


def difftalk_config_from_dict(data: dict[str, Any]) -> DiffTalkConfig:
    """Rebuild a ``DiffTalkConfig`` from ``dataclasses.asdict`` output (lists become tuples)."""
    # imported here: this module holds DiffTalkOptions, read to build the CLI without torch
    from talkinghead.checkpoints import config_from_dict

    kwargs = dict(data)
    for name, cls in _NESTED.items():
        if isinstance(kwargs.get(name), dict):
            kwargs[name] = config_from_dict(cls, kwargs[name])
    return DiffTalkConfig(**kwargs)


@dataclass(frozen=True)
class DiffTalkOptions:
    """Runtime knobs of one DiffTalk call (field names shared with GenerateOptions where they mean the same)."""

    num_steps: int | None = None  # DDIM steps; None = the model's default (official 200)
    seed: int | None = (
        None  # None draws a fresh seed (reported); reproducible at the same batch_size
    )
    fps: int = 25  # output frame rate; the audio windows are 2 feature steps per frame at 25 fps
    sampler: str = "ddim"  # only "ddim" (eta 0, the official sampler)
    crop: bool = (
        True  # detect the face per frame and crop a face-centred square (off: frames are crops)
    )
    crop_margin: float = 1.0  # extra margin around the face crop (1.0 = default framing)
    paste_back: bool = True  # put the regenerated lower face into the uncropped frame (off: crops)
    batch_size: int = 8  # frames denoised together
    box_smoothing: int = 9  # frames the face box is averaged over (temporal smoothing)
    audio_features: str | None = None  # .npy of DeepSpeech windows (N, 16, 29) or (N, 8, 16, 29)
    reference_frame: int | None = None  # reference frame index; None = the first frame with a face
