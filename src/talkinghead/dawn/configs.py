"""Architecture configs (frozen dataclasses) and model presets.

Every network is built from exactly one of these objects, and the object travels with the weights as
``config.json`` next to ``model.safetensors``. Field defaults are the official DAWN values
(``config/hdtf128.yaml``, ``DAWN_128.yaml`` and the PBNet ``opt.yaml``, see dawn_spec.md §0, §2).

Glossary: FlowAutoencoder = LFG (latent flow generator, paper Sec. 3.1); PoseBlinkCVAE = PBNet
(paper Sec. 3.3); UNet3D = the denoiser of A2V-FDM (paper Sec. 3.2).
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import ClassVar


@dataclass(frozen=True)
class FlowAEConfig:
    """LFG: region predictor + background motion + pixel-wise flow predictor + warping generator."""

    num_channels: int = 3  # image channels (RGB)
    num_regions: int = 10  # motion regions predicted by the region predictor
    # generator encoder/decoder (the part used at inference)
    block_expansion: int = 64  # channels of the generator's first block
    max_features: int = 512  # channel cap of the generator encoder
    num_down_blocks: int = 2  # encoder down-samplings: source feature is at 1/2**n resolution
    num_bottleneck_blocks: int = 6  # residual blocks between encoder and decoder
    # pixel-wise flow predictor (training-time ground-truth flow)
    flow_block_expansion: int = 64  # hourglass base width
    flow_max_features: int = 1024  # hourglass channel cap
    flow_num_blocks: int = 5  # hourglass depth
    # region predictor
    region_block_expansion: int = 32  # hourglass base width
    region_max_features: int = 1024  # hourglass channel cap
    region_num_blocks: int = 5  # hourglass depth
    temperature: float = 0.1  # softmax temperature of the region heat-maps
    # background motion predictor
    bg_block_expansion: int = 32  # encoder base width
    bg_max_features: int = 1024  # encoder channel cap
    bg_num_blocks: int = 5  # encoder depth
    scale_factor: float = 0.25  # flow / region resolution relative to the image
    # resolution the region predictor sees, relative to the image; None = scale_factor (official).
    # Small frames need it finer: at 64 px and 0.25 a mouth is 3 px wide after the blur.
    region_scale_factor: float | None = None
    svd: str = "lapack"  # region covariance sqrt: "lapack" (official, CPU) | "analytic" (on device)


@dataclass(frozen=True)
class PoseBlinkConfig:
    """PBNet: transformer CVAE mapping audio features to per-frame head pose or eye-openness deltas."""

    motion_dim: int = 6  # 6 for the pose net (yaw, pitch, roll, scale, tx, ty), 2 for the blink net
    audio_dim: int = 1024  # per-frame audio feature size (HuBERT-large)
    latent_dim: int = 256  # size of the per-frame latent z (== audio_latent_dim)
    audio_latent_dim: int = 256  # audio embedding width
    pose_latent_dim: int = 64  # decoder width
    ff_size: int = 128  # feed-forward hidden size
    num_layers: int = 2  # decoder (and encoder) layers
    num_heads: int = 4  # attention heads
    dim_head: int = 32  # features per head in the decoder attentions
    rotary_dim: int = 4  # leading features per head rotated by RoPE (official: min(32, num_heads))
    num_buckets: int = 128  # relative position buckets (T5 style)
    max_distance: int = 128  # distance at which buckets saturate
    eval_window: int = 200  # eval-mode attention window (frames); |i-j| > window is masked
    dropout: float = 0.1  # dropout (training only)


@dataclass(frozen=True)
class UNet3DConfig:
    """A2V-FDM denoiser: 3D UNet over (flow_x, flow_y, occlusion) latents conditioned per frame."""

    dim: int = 64  # base width; level widths are dim * dim_mults
    dim_mults: tuple[int, ...] = (1, 2, 4, 8)  # width multipliers per level
    latent_channels: int = 3  # noisy latent: flow x, flow y, occlusion*2-1
    feature_channels: int = 256  # LFG source feature channels (frame-invariant)
    face_loc_channels: int = 16  # face-location embedding channels (frame-invariant)
    audio_dim: int = 1024  # per-frame audio condition
    pose_dim: int = 6  # per-frame pose delta condition
    eye_dim: int = 2  # per-frame eye delta condition
    attn_heads: int = 8  # heads of the spatial and temporal attentions
    attn_dim_head: int = 32  # features per head
    cross_attn_heads: int = 8  # heads of the per-frame condition cross-attention
    cross_attn_dim_head: int = 8  # features per cross-attention head
    init_kernel_size: int = 7  # spatial kernel of the first convolution
    resnet_groups: int = 8  # GroupNorm groups
    rel_pos_buckets: int = 32  # temporal relative position buckets
    rel_pos_max_distance: int = 32  # distance at which buckets saturate
    window: int = 40  # local temporal attention half-width (frames) at inference
    attention: str = "local"  # temporal attention: "local" (banded, O(F*window)) or "full" (O(F^2))

    @property
    def in_channels(self) -> int:
        return self.latent_channels + self.feature_channels + self.face_loc_channels

    @property
    def cond_dim(self) -> int:
        return self.audio_dim + self.pose_dim + self.eye_dim


@dataclass(frozen=True)
class DiffusionConfig:
    """Noise schedule and sampler defaults of A2V-FDM (dawn_spec.md §2.3.3, §1.4)."""

    num_train_timesteps: int = 1000  # training diffusion steps
    cosine_s: float = 0.008  # cosine schedule offset
    threshold_quantile: float = 0.9  # dynamic thresholding percentile


@dataclass(frozen=True)
class DawnConfig:
    """A complete DAWN model: which networks at which widths, and the working resolution."""

    resolution: int = 128  # output frame size (square), 128 or 256
    flow_ae: FlowAEConfig = field(default_factory=FlowAEConfig)
    pose: PoseBlinkConfig = field(default_factory=PoseBlinkConfig)
    blink: PoseBlinkConfig = field(default_factory=lambda: PoseBlinkConfig(motion_dim=2))
    unet: UNet3DConfig = field(default_factory=UNet3DConfig)
    diffusion: DiffusionConfig = field(default_factory=DiffusionConfig)


PRESETS: dict[str, DawnConfig] = {
    "dawn-128": DawnConfig(resolution=128),
    "dawn-256": DawnConfig(resolution=256),
    "tiny": DawnConfig(
        resolution=32,
        flow_ae=FlowAEConfig(
            block_expansion=8,
            max_features=16,
            num_bottleneck_blocks=1,
            flow_block_expansion=4,
            flow_max_features=16,
            flow_num_blocks=2,
            region_block_expansion=4,
            region_max_features=16,
            region_num_blocks=2,
            bg_block_expansion=4,
            bg_max_features=16,
            bg_num_blocks=2,
            num_regions=4,
        ),
        pose=PoseBlinkConfig(
            audio_dim=8, latent_dim=16, audio_latent_dim=16, pose_latent_dim=8, ff_size=16,
            num_heads=2, dim_head=8, rotary_dim=2, num_buckets=16, max_distance=16,
        ),
        blink=PoseBlinkConfig(
            motion_dim=2, audio_dim=8, latent_dim=16, audio_latent_dim=16, pose_latent_dim=8,
            ff_size=16, num_heads=2, dim_head=8, rotary_dim=2, num_buckets=16, max_distance=16,
        ),
        unet=UNet3DConfig(
            dim=8, dim_mults=(1, 2), feature_channels=16, face_loc_channels=4, audio_dim=8,
            attn_heads=2, attn_dim_head=8, cross_attn_heads=2, cross_attn_dim_head=4,
            init_kernel_size=3, resnet_groups=4, rel_pos_buckets=8, rel_pos_max_distance=8,
            window=4,
        ),
    ),
    # The packaged demo model (talkinghead demo): 64 px, log-mel audio, trained on synthetic faces
    # on a CPU in minutes; all components together stay well under 25 MB.
    "demo": DawnConfig(
        resolution=64,
        flow_ae=FlowAEConfig(
            block_expansion=16,
            max_features=64,
            num_bottleneck_blocks=1,
            flow_block_expansion=8,
            flow_max_features=64,
            flow_num_blocks=3,
            region_block_expansion=8,
            region_max_features=64,
            region_num_blocks=3,
            bg_block_expansion=8,
            bg_max_features=64,
            bg_num_blocks=3,
            num_regions=10,
            region_scale_factor=0.5,
        ),
        pose=PoseBlinkConfig(
            audio_dim=80, latent_dim=64, audio_latent_dim=64, pose_latent_dim=32, ff_size=64,
            num_heads=2, dim_head=16, rotary_dim=2, num_buckets=32, max_distance=32,
        ),
        blink=PoseBlinkConfig(
            motion_dim=2, audio_dim=80, latent_dim=64, audio_latent_dim=64, pose_latent_dim=32,
            ff_size=64, num_heads=2, dim_head=16, rotary_dim=2, num_buckets=32, max_distance=32,
        ),
        unet=UNet3DConfig(
            dim=32, dim_mults=(1, 2, 4), feature_channels=64, face_loc_channels=16, audio_dim=80,
            attn_heads=4, attn_dim_head=16, cross_attn_heads=4, cross_attn_dim_head=8,
            init_kernel_size=5, resnet_groups=8, rel_pos_buckets=32, rel_pos_max_distance=32,
            window=20,  # trained on 24-frame clips: no offset beyond 23 was ever seen
        ),
    ),
}


@dataclass(frozen=True)
class FaceLocConfig:
    """Face-location encoder (official ``Face_loc_Encoder``): binary face box -> UNet input channels."""

    out_channels: int = 16  # embedding channels (== UNet3DConfig.face_loc_channels)
    hidden_channels: int = 8  # channels after the first stride-2 convolution


SAMPLERS = ("ddim", "dpmpp-2m")  # the samplers DAWN can run (diffusion/samplers.py)
OFFICIAL_NUM_STEPS = 20  # DDIM steps of the official sampler (GenerateOptions.num_steps=None)
OFFICIAL_ETA = 1.0  # its stochasticity (GenerateOptions.eta=None)


@dataclass(frozen=True)
class GenerateOptions:
    """Runtime knobs of one DAWN generation call. CLI flags take their defaults and help from here."""

    CHOICES: ClassVar[dict[str, tuple[str, ...]]] = {"sampler": SAMPLERS}

    # DDIM steps; None: the model's (official: 20; a step-distilled model: the N it learned)
    num_steps: int | None = None
    # DDIM stochasticity; None: the model's (official: 1.0; a step-distilled model: 0)
    eta: float | None = None
    guidance_scale: float = 1.0  # classifier-free guidance; 1.0 = off (official)
    window: int | None = None  # temporal attention half-width; None = the model's (40)
    seed: int | None = None  # None draws a fresh seed (reported in the result)
    fps: int = 25  # output frame rate (the models are trained at 25 fps)
    motion_scale: float = 1.0  # multiplies the generated head-motion delta; 0 = still head
    blink: bool = True  # generate blinks (False keeps the eyes at their initial state)
    crop: bool = True  # detect the face and crop a face-centred square
    crop_margin: float = 1.0  # extra margin around the face crop (1.0 = default framing)
    paste_back: bool = False  # animate the crop inside the original image
    decode_batch: int = 16  # frames decoded by the LFG at once
    faithful: bool = False  # replicate the official code's bugs (DDIM alphas_prev, bbox axes)
    # ddim (official) or dpmpp-2m (DPM-Solver++(2M): ~10 steps, deterministic, so eta and the
    # faithful DDIM update do not apply; its quality cost is in benchmarks/RESULTS.md)
    sampler: str = "ddim"
    # torch.compile the UNet (inductor): the first call per clip length compiles (minutes on
    # CPU), so it pays off on long or repeated clips; falls back to eager with a warning
    compile: bool = False

    def for_model(self, distilled_steps: int | None = None) -> GenerateOptions:
        """A copy with ``num_steps`` / ``eta`` left None set to the model's: the official 20 and
        1.0, or the N deterministic steps a UNet was distilled for (``dawn/training/distill.py``).
        """
        steps = OFFICIAL_NUM_STEPS if distilled_steps is None else distilled_steps
        eta = OFFICIAL_ETA if distilled_steps is None else 0.0
        return replace(
            self,
            num_steps=steps if self.num_steps is None else self.num_steps,
            eta=eta if self.eta is None else self.eta,
        )


@dataclass(frozen=True)
class StreamOptions:
    """Windowing of ``DawnPipeline.stream`` (``dawn/streaming.py``); ``generate --stream`` flags.

    Defaults measured on the demo model (``benchmarks/streaming.py``, RESULTS.md run 16): 60-frame
    windows produce 50 new frames per window against 30 of 40 (1.2-1.4x the frames per second),
    with the first frame still under 2 s and no larger seam.
    """

    window_frames: int = 60  # frames denoised together per window (the UNet's temporal context)
    overlap: int = 10  # frames a window takes over from the previous one (no seam)
    lookahead: int = 10  # frames of speech past a window's end awaited before generating it

    def __post_init__(self) -> None:
        if self.window_frames < 2:
            raise ValueError(f"window_frames={self.window_frames} must be at least 2")
        if not 0 <= self.overlap < self.window_frames:
            raise ValueError(
                f"overlap={self.overlap} must be in [0, window_frames={self.window_frames})"
            )
        if self.lookahead < 0:
            raise ValueError(f"lookahead={self.lookahead} must be >= 0")
