"""Diffused Heads configs (frozen dataclasses) and presets (diffusedheads_spec.md §2.1, §1.2, §1.4, §6).

One dataclass per network (the UNet denoiser, the SDA-style audio encoder), one for the diffusion
schedule, and ``DiffusedHeadsConfig`` that ties them to the working resolution. Defaults are the
released CREMA model (train ``configs/config.yaml`` + main ``config_crema.yaml``; RGB motion frames).

Presets: ``crema`` (the official width, 215,748,614 UNet parameters), ``golden`` (the reduced width of
../shared/golden/diffusedheads: 32 base channels, 32-channel heads; only the width differs) and ``tiny``
(tests). The family registry (``talkinghead.families``) maps the config type names to networks.

Glossary: identity frame = ``x_cond`` (the portrait the clip keeps); motion frames = the previously
generated frames fed back as input channels; audio window = the 2·n+1 audio embeddings around the
current frame.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

from talkinghead.diffusion.prediction import check_prediction


@dataclass(frozen=True)
class DiffusedHeadsUNetConfig:
    """The denoiser: a guided-diffusion UNet with frame identity input and double FiLM audio conditioning."""

    image_size: int = 128  # frame side in pixels (square)
    in_channels: int = 3  # channels of the noisy frame and of the identity frame (RGB)
    model_channels: int = (
        256  # base width; also the audio embedding size (tied in the official code)
    )
    out_channels: int = 6  # eps (3) ‖ v (3): learned-range variance interpolation
    num_res_blocks: int = 2  # residual blocks per level in the encoder (decoder: one more)
    attention_resolutions: tuple[int, ...] = (32,)  # feature-map sides that get self-attention
    dropout: float = 0.1  # dropout inside the residual blocks (training only)
    channel_mult: tuple[int, ...] = (1, 2, 3)  # width multiplier per level
    num_heads: int = 4  # attention heads, used only when num_head_channels == -1
    num_head_channels: int = 64  # channels per attention head (-1: use num_heads)
    num_groups: int = 32  # GroupNorm groups (official: always 32)
    n_motion_frames: int = 2  # previously generated frames concatenated to the input
    motion_channels: int = 3  # channels per motion frame (3 RGB, 1 grayscale)
    n_audio_motion_embs: int = 2  # audio embeddings on each side of the current frame

    @property
    def input_channels(self) -> int:
        """Channels of the first convolution: x_t ‖ motion frames ‖ identity frame."""
        return 2 * self.in_channels + self.n_motion_frames * self.motion_channels

    @property
    def audio_window(self) -> int:
        """Audio embeddings per frame: 2·n + 1."""
        return 2 * self.n_audio_motion_embs + 1

    @property
    def audio_dim(self) -> int:
        """Size of one audio embedding (tied to ``model_channels`` by the official architecture)."""
        return self.model_channels


@dataclass(frozen=True)
class AudioEncoderConfig:
    """SDA-style raw-waveform encoder (speech-driven-animation): strided 1-D convs per window + GRU."""

    sample_rate: int = 16000  # Hz of the input waveform
    window_s: float = 0.2  # seconds per window (3200 samples at 16 kHz)
    stride_s: float = 0.04  # seconds between windows (one 25 fps video frame)
    init_kernel_s: float = 0.005  # first convolution kernel in seconds (80 samples)
    init_stride_s: float = 0.001  # first convolution stride in seconds (16 samples)
    num_feature_maps: int = 16  # channels of the first convolution; doubled by every later one
    code_size: int = 256  # per-window code fed to the GRU [unverified for the CREMA file]
    hidden_size: int = (
        256  # GRU hidden size = embedding size (must equal the UNet's model_channels)
    )
    num_layers: int = 2  # stacked GRU layers


@dataclass(frozen=True)
class DiffusedHeadsDiffusionConfig:
    """Training schedule and sampler defaults (improved-DDPM cosine, learned-range variance)."""

    num_train_timesteps: int = 1000  # T
    max_beta: float = 0.999  # clip of the training betas
    num_inference_steps: int = (
        100  # respaced ancestral steps (config_crema.yaml; the paper used 200)
    )
    # what the UNet's first 3 output channels predict: "eps" (official) or "v" (our small models;
    # diffusion/prediction.py says why)
    prediction: str = "eps"

    def __post_init__(self) -> None:
        check_prediction(self.prediction)


@dataclass(frozen=True)
class DiffusedHeadsConfig:
    """A complete Diffused Heads model."""

    resolution: int = 128  # frame side the UNet works at
    output_size: int = 256  # frame side of the written video (the official writes at scale 2)
    fps: int = 25  # video frame rate the model was trained at
    unet: DiffusedHeadsUNetConfig = field(default_factory=DiffusedHeadsUNetConfig)
    audio_encoder: AudioEncoderConfig = field(default_factory=AudioEncoderConfig)
    diffusion: DiffusedHeadsDiffusionConfig = field(default_factory=DiffusedHeadsDiffusionConfig)


def _with_width(model_channels: int, head_channels: int, **unet: object) -> DiffusedHeadsConfig:
    cfg = DiffusedHeadsUNetConfig(
        model_channels=model_channels,
        num_head_channels=head_channels,
        **unet,  # type: ignore[arg-type]
    )
    image = cfg.image_size
    audio = replace(AudioEncoderConfig(), hidden_size=model_channels)
    return DiffusedHeadsConfig(resolution=image, unet=cfg, audio_encoder=audio)


PRESETS: dict[str, DiffusedHeadsConfig] = {
    "crema": DiffusedHeadsConfig(),
    "golden": _with_width(32, 32),
    "tiny": DiffusedHeadsConfig(
        resolution=32,
        output_size=64,
        unet=DiffusedHeadsUNetConfig(
            image_size=32,
            model_channels=8,
            channel_mult=(1, 2),
            attention_resolutions=(16,),
            num_head_channels=4,
            num_groups=4,
        ),
        audio_encoder=AudioEncoderConfig(num_feature_maps=4, code_size=8, hidden_size=8),
        diffusion=DiffusedHeadsDiffusionConfig(num_inference_steps=7),
    ),
}
