"""DiffusedHeadsPipeline: portrait + speech -> talking-head frames with Diffused Heads (spec §1).

Stages: the portrait is detected and similarity-aligned to the CREMA framing (``alignment``), becoming
the identity frame x_cond (128 px, [-1, 1]); the speech (any format and rate, ``media.load_audio``) is
encoded by the SDA-style audio encoder into one 256-d embedding per 25 fps frame; then every frame is
sampled with the official respaced ancestral sampler (``sampling.generate_frames``), conditioned on
x_cond, the two previous frames and the 5-embedding audio window. Frames are upscaled to the 256-px
output of the original, optionally pasted back into the photo, and yielded lazily.

Everything is seeded: the draws follow the official order from one CPU generator (``OfficialNoise``),
so a seed gives the same frames on every device and matches a seeded official run (to float32 rounding;
with ``official_order`` the UNet also runs in the official op order).
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import ClassVar

import cv2
import numpy as np
import torch
from torch import Tensor

from talkinghead import checkpoints
from talkinghead.diffused_heads.alignment import crema_transform, paste_aligned, warp_to_crema
from talkinghead.diffused_heads.audio_encoder import SDAAudioEncoder
from talkinghead.diffused_heads.configs import DiffusedHeadsConfig, DiffusedHeadsDiffusionConfig
from talkinghead.diffused_heads.convert import FAMILY
from talkinghead.diffused_heads.options import SAMPLERS, DiffusedHeadsOptions
from talkinghead.diffused_heads.sampling import (
    FrameSampler,
    OfficialNoise,
    frame_sampler,
    generate_frames,
)
from talkinghead.diffused_heads.unet import DiffusedHeadsUNet
from talkinghead.face.analysis import FaceAnalyzer
from talkinghead.media.audio import load_audio
from talkinghead.media.image import load_portrait
from talkinghead.model_index import read_model_index
from talkinghead.pipelines.base import GenerationResult, ProgressCallback, TalkingHeadPipeline

logger = logging.getLogger(__name__)


@dataclass
class PreparedPortrait:
    """A portrait ready for any number of audio clips.

    Attributes:
        original: (H, W, 3) uint8 RGB as loaded.
        aligned: (S, S, 3) uint8 RGB identity frame at the model resolution.
        x_cond: (1, 3, S, S) identity frame in [-1, 1] on the pipeline's device and dtype.
        matrix: (2, 3) transform from original pixels to the S-pixel aligned frame.
    """

    original: np.ndarray
    aligned: np.ndarray
    x_cond: Tensor
    matrix: np.ndarray


class DiffusedHeadsPipeline(TalkingHeadPipeline):
    """Diffused Heads inference over loaded networks.

    Args:
        unet: the denoiser.
        audio_encoder: the SDA-style encoder, or None (then ``audio`` must be precomputed embeddings).
        config: resolution, output size and diffusion settings.
        face_analyzer: face detection (+ landmarks with 3DDFA weights) for ``prepare``.
    """

    family: ClassVar[str] = FAMILY
    options_class: ClassVar[type] = DiffusedHeadsOptions

    def __init__(
        self,
        unet: DiffusedHeadsUNet,
        audio_encoder: SDAAudioEncoder | None,
        config: DiffusedHeadsConfig,
        face_analyzer: FaceAnalyzer | None = None,
    ) -> None:
        if audio_encoder is not None and audio_encoder.cfg.hidden_size != unet.cfg.audio_dim:
            raise ValueError(
                "the audio encoder's embedding size does not match the UNet's audio input"
            )
        self.unet = unet.eval().requires_grad_(False)
        self.audio_encoder = audio_encoder.eval().requires_grad_(False) if audio_encoder else None
        self.config = config
        self._face_analyzer = face_analyzer
        self.device = next(unet.parameters()).device
        self.dtype = next(unet.parameters()).dtype

    @classmethod
    def from_pretrained(
        cls,
        path: str | Path,
        *,
        device: str | torch.device = "cpu",
        dtype: torch.dtype = torch.float32,
        face3d_dir: str | Path | None = None,
    ) -> DiffusedHeadsPipeline:
        """Load a model directory written by ``diffused_heads.convert.convert``."""
        path = Path(path)
        index = read_model_index(path, FAMILY)
        components = index.components
        unet = checkpoints.load_component(path / components["unet"], device=device)
        encoder = None
        if "audio_encoder" in components:
            encoder = checkpoints.load_component(path / components["audio_encoder"], device=device)
        settings = index.config
        diffusion = DiffusedHeadsDiffusionConfig(**settings.get("diffusion", {}))
        config = DiffusedHeadsConfig(
            resolution=settings.get("resolution", unet.cfg.image_size),
            output_size=settings.get("output_size", 2 * unet.cfg.image_size),
            fps=settings.get("fps", 25),
            unet=unet.cfg,
            audio_encoder=encoder.cfg
            if encoder is not None
            else DiffusedHeadsConfig().audio_encoder,
            diffusion=diffusion,
        )
        # without 3DDFA weights the detector is built when a crop first needs it (none with crop=False)
        analyzer = FaceAnalyzer(face3d_dir, device=device) if face3d_dir is not None else None
        return cls(unet, encoder, config, analyzer).to(device, dtype)  # type: ignore[arg-type]

    def to(
        self, device: str | torch.device, dtype: torch.dtype | None = None
    ) -> DiffusedHeadsPipeline:
        """Move the networks to ``device``; cast the UNet to ``dtype`` (the audio encoder stays float32)."""
        self.unet.to(device=device, dtype=dtype) if dtype else self.unet.to(device)
        if self.audio_encoder is not None:
            self.audio_encoder.to(device)
        self.device, self.dtype = torch.device(device), dtype or self.dtype
        return self

    @property
    def face_analyzer(self) -> FaceAnalyzer:
        if self._face_analyzer is None:
            self._face_analyzer = FaceAnalyzer(None, device=self.device)
        return self._face_analyzer

    # -- stages ------------------------------------------------------------------------------------

    def prepare(
        self, source: str | Path | np.ndarray, options: DiffusedHeadsOptions | None = None
    ) -> PreparedPortrait:
        """Load the portrait, find the face and align it to the CREMA framing (once per portrait)."""
        options = options or DiffusedHeadsOptions()
        size = self.config.resolution
        original = source if isinstance(source, np.ndarray) else load_portrait(source)
        if original.ndim != 3 or original.shape[2] != 3 or original.dtype != np.uint8:
            raise ValueError(
                f"the portrait must be an (H, W, 3) uint8 RGB image, got {original.shape} {original.dtype}"
            )
        if options.crop:
            name = "the image" if isinstance(source, np.ndarray) else str(source)
            face = self.face_analyzer.analyze(original, name=name)
            matrix = crema_transform(
                size, landmarks=face.landmarks, box=face.box, margin=options.crop_margin
            )
            aligned = warp_to_crema(original, matrix, size)
        else:
            h, w = original.shape[:2]
            matrix = np.array([[size / w, 0.0, 0.0], [0.0, size / h, 0.0]])
            aligned = cv2.resize(original, (size, size), interpolation=cv2.INTER_AREA)
        x_cond = torch.from_numpy(aligned).permute(2, 0, 1)[None].float() / 255 * 2 - 1
        return PreparedPortrait(original, aligned, x_cond.to(self.device, self.dtype), matrix)

    @torch.no_grad()
    def audio_embeddings(self, audio: str | Path | np.ndarray | Tensor) -> Tensor:
        """Speech -> (1, F, C) embeddings on the pipeline's device and dtype.

        ``audio``: a file (any format and rate), (N,) float32 samples at 16 kHz, or a (F, C) tensor of
        precomputed embeddings.
        """
        if isinstance(audio, Tensor):
            if audio.ndim != 2 or audio.shape[1] != self.unet.cfg.audio_dim:
                raise ValueError(
                    f"audio embeddings must be (F, {self.unet.cfg.audio_dim}), got {tuple(audio.shape)}"
                )
            return audio[None].to(self.device, self.dtype)
        if self.audio_encoder is None:
            raise ValueError(
                "this model has no audio encoder; convert it together with audio_encoder.pt"
            )
        samples = (
            audio
            if isinstance(audio, np.ndarray)
            else load_audio(audio, self.audio_encoder.cfg.sample_rate)
        )
        if samples.ndim != 1:
            raise ValueError(f"audio samples must be mono (N,), got shape {samples.shape}")
        if len(samples) < self.audio_encoder.stride:
            raise ValueError("the audio is shorter than one video frame (40 ms); use a longer clip")
        wave = torch.from_numpy(np.ascontiguousarray(samples, dtype=np.float32))[None].to(
            self.device
        )
        return self.audio_encoder.embed_audio(wave).to(self.dtype)

    def _check(self, options: DiffusedHeadsOptions) -> None:
        if options.sampler not in SAMPLERS:
            raise ValueError(f"sampler={options.sampler!r} must be one of {', '.join(SAMPLERS)}")
        if not 2 <= options.num_steps <= self.config.diffusion.num_train_timesteps:
            raise ValueError(
                f"num_steps={options.num_steps} must be between 2 and {self.config.diffusion.num_train_timesteps}"
            )
        if options.fps != self.config.fps:
            raise ValueError(f"fps={options.fps}: this model runs at {self.config.fps} fps only")
        if options.stabilize < 0:
            raise ValueError(f"stabilize={options.stabilize} must be >= 0 (0 turns it off)")
        if options.output_size is not None and options.output_size < 8:
            raise ValueError(f"output_size={options.output_size} must be at least 8 pixels")

    def _sampler(self, options: DiffusedHeadsOptions) -> FrameSampler:
        return frame_sampler(
            options.sampler, options.num_steps, self.config.diffusion, device=self.device
        )

    # -- the call ----------------------------------------------------------------------------------

    def __call__(
        self,
        source: PreparedPortrait | str | Path | np.ndarray,
        audio: str | Path | np.ndarray | Tensor,
        options: DiffusedHeadsOptions | None = None,
        *,
        generator: torch.Generator | None = None,
        callback: ProgressCallback | None = None,
    ) -> GenerationResult:
        """Animate ``source`` speaking ``audio``; frames are computed as the result is iterated.

        Args:
            source: a ``PreparedPortrait`` or a portrait path / (H, W, 3) uint8 array.
            audio: speech file, (N,) float32 16 kHz samples, or (F, C) precomputed embeddings.
            options: runtime knobs.
            generator: a CPU generator to draw from (its state is used, ``options.seed`` ignored).
            callback: ``(stage, done, total)`` after the audio encoding and after every sampler step.
        """
        options = options or DiffusedHeadsOptions()
        self._check(options)
        if generator is not None and generator.device.type != "cpu":
            raise ValueError(
                "pass a CPU torch.Generator: the draws are made on the CPU so every device agrees"
            )
        seed, generator = self.seeded_generator(options.seed, generator)
        options = replace(options, seed=seed)
        sampler = self._sampler(options)  # validates num_steps
        emb = self.audio_embeddings(audio)  # checked before the (slower) face analysis
        if callback is not None:
            callback("audio", 1, 1)
        prepared = source if isinstance(source, PreparedPortrait) else self.prepare(source, options)
        num_frames = emb.shape[1]
        size = self.config.resolution
        noise = OfficialNoise(seed, num_frames, (1, 3, size, size), generator=generator)
        frames = self._frames(prepared, emb, sampler, noise, options, callback)
        return GenerationResult(frames, num_frames, options.fps, seed, prepared)

    def _frames(
        self,
        prepared: PreparedPortrait,
        emb: Tensor,
        sampler: FrameSampler,
        noise: OfficialNoise,
        options: DiffusedHeadsOptions,
        callback: ProgressCallback | None,
    ) -> Iterator[np.ndarray]:
        total = emb.shape[1] * options.num_steps

        def report(frame: int, done: int, steps: int) -> None:
            if callback is not None:
                callback("frames", frame * steps + done, total)

        out_size = options.output_size or self.config.output_size
        matrix = prepared.matrix * (out_size / self.config.resolution)
        x_cond = prepared.x_cond.to(self.device, self.dtype)
        for frame in generate_frames(
            self.unet,
            x_cond,
            emb,
            sampler,
            noise,
            stabilize_every=options.stabilize,
            callback=report,
            official_order=options.official_order,
        ):
            image = ((frame[0].float().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)
            image = image.permute(1, 2, 0).cpu().numpy()
            if out_size != image.shape[0]:
                image = cv2.resize(image, (out_size, out_size), interpolation=cv2.INTER_LINEAR)
            if options.paste_back:
                image = paste_aligned(prepared.original, image, matrix)
            yield image[None]
