"""DawnPipeline: portrait + speech -> talking-head frames (DAWN inference, dawn_spec.md §1).

Stages: ``prepare`` (face detection, square crop, initial pose / eyes / face box, the LFG encoding of
the portrait and its frame-invariant UNet input: once per portrait) -> audio features at 25 fps
(HuBERT-large, or log-mel for models trained on it) -> head motion and blinks (PBNet, or a driver) ->
the whole clip's latent motion in one diffusion pass (A2V-FDM, local temporal attention, any length)
-> LFG decoding in batches, streamed to the caller.

Unlike the official ``unified_video_generator.py`` there is no 200-frame cap, everything is seedable,
device and dtype are the caller's, and frames are produced lazily so memory does not grow with
length on the output side.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from talkinghead.dawn.configs import SAMPLERS, DawnConfig, GenerateOptions
from talkinghead.dawn.driving import driver_tracks
from talkinghead.dawn.models.face_location import bbox_mask
from talkinghead.dawn.models.flow_autoencoder import SourceEncoding
from talkinghead.dawn.modules import DawnModules, diffusion_config, load_dawn_modules
from talkinghead.dawn.motion import (
    MOTION_DTYPE,
    MOTION_NETS,
    Motion,
    combine_motion,
    driver_motion,
    generate_motion,
)
from talkinghead.dawn.portrait import Portrait, frame_portrait
from talkinghead.dawn.streaming import DawnStreaming
from talkinghead.diffusion.samplers import DDIMStep, ddim_sample, dpmpp_2m_sample, guided
from talkinghead.diffusion.schedules import cosine_alphas_cumprod, ddim_timesteps
from talkinghead.face.analysis import FaceAnalyzer, FaceNotFoundError, FaceState
from talkinghead.face.crop import paste_back
from talkinghead.media.audio import load_audio, num_video_frames
from talkinghead.media.audio_features import HubertFeatureExtractor, log_mel_features
from talkinghead.media.image import load_portrait
from talkinghead.model_index import read_model_index
from talkinghead.pipelines.base import GenerationResult, ProgressCallback, TalkingHeadPipeline
from talkinghead.pipelines.compile import CompileBackend, CompiledDenoiser

logger = logging.getLogger(__name__)

AUDIO_FEATURES = ("hubert", "logmel")


class DawnPipeline(DawnStreaming, TalkingHeadPipeline):
    """DAWN inference over loaded networks (``stream``: ``dawn.streaming``).

    Args:
        modules: the five networks (``modules.load_dawn_modules`` or random ones for tests).
        audio_encoder: HuBERT extractor, or None for models trained on log-mel features.
        face_analyzer: portrait analysis (FaceBoxes + 3DDFA, or its weight-free fallback).
        config: the architecture, for the resolution and diffusion settings.
        audio_features: "hubert" or "logmel", what the model was trained on.
        compile_backend: the dynamo backend used when ``GenerateOptions.compile`` is set.
    """

    family = "dawn"
    options_class = GenerateOptions

    def __init__(
        self,
        modules: DawnModules,
        *,
        audio_encoder: HubertFeatureExtractor | None,
        face_analyzer: FaceAnalyzer,
        config: DawnConfig | None = None,
        audio_features: str = "hubert",
        compile_backend: CompileBackend = "inductor",
    ) -> None:
        if audio_features not in AUDIO_FEATURES:
            raise ValueError(f"audio_features={audio_features!r} must be one of {AUDIO_FEATURES}")
        if audio_features == "hubert" and audio_encoder is None:
            raise ValueError("this model is conditioned on HuBERT features: pass an audio_encoder")
        self.modules = modules
        self.audio_encoder = audio_encoder
        self.audio_features = audio_features
        self.face_analyzer = face_analyzer
        self.config = config or DawnConfig(resolution=modules.resolution)
        for module in modules.as_dict().values():
            module.eval().requires_grad_(False)
        for name in MOTION_NETS:
            getattr(modules, name).to(dtype=MOTION_DTYPE)  # PBNet stays float32 (motion.py)
        self.device = next(modules.unet.parameters()).device
        self.dtype = next(modules.unet.parameters()).dtype
        self.compile_backend = compile_backend
        self._compiled: CompiledDenoiser | None = None

    @classmethod
    def from_pretrained(
        cls,
        path: str | Path,
        *,
        device: str | torch.device = "cpu",
        dtype: torch.dtype = torch.float32,
        hubert_path: str | Path | None = None,
        face3d_dir: str | Path | None = None,
        resolution: int | None = None,
    ) -> DawnPipeline:
        """Load a DAWN model directory, a folder of them or an official download
        (``dawn.weights.resolve_weights``)."""
        from talkinghead.dawn.weights import resolve_weights

        found = resolve_weights(
            path, resolution=resolution, hubert_path=hubert_path, face3d_dir=face3d_dir
        )
        # stored dtype first, so PBNet's float32 weights are never rounded; ``to`` casts the rest
        modules = load_dawn_modules(found.model_dir, device=device)
        config = DawnConfig(
            resolution=modules.resolution,
            diffusion=diffusion_config(read_model_index(found.model_dir)),
        )
        encoder = None
        if found.audio_features == "hubert":
            assert found.hubert_dir is not None
            encoder = HubertFeatureExtractor.from_pretrained(found.hubert_dir, device=device)
        analyzer = FaceAnalyzer(found.face3d_dir, device=device)
        pipe = cls(
            modules,
            audio_encoder=encoder,
            face_analyzer=analyzer,
            config=config,
            audio_features=found.audio_features,
        )
        return pipe.to(device, dtype)

    def to(self, device: str | torch.device, dtype: torch.dtype | None = None) -> DawnPipeline:
        """Move every network to ``device``; cast all but PBNet (kept float32) to ``dtype``."""
        for name, module in self.modules.as_dict().items():
            cast = MOTION_DTYPE if name in MOTION_NETS else dtype
            module.to(device=device, dtype=cast) if cast else module.to(device)
        if self.audio_encoder is not None:
            self.audio_encoder.to(device)
        self.device = torch.device(device)
        self.dtype = dtype or self.dtype
        return self

    # -- stages ----------------------------------------------------------------------------------

    @torch.no_grad()
    def prepare(
        self,
        source: str | Path | np.ndarray,
        options: GenerateOptions | None = None,
        *,
        face: FaceState | None = None,
    ) -> Portrait:
        """Load, analyse, crop and encode a portrait once, for any number of clips.

        Args:
            source: portrait path or (H, W, 3) uint8 RGB array.
            options: ``crop``, ``crop_margin`` and ``faithful`` apply here.
            face: the face's analysis when it is known (synthetic data, a cached analysis):
                skips detection.
        """
        options = options or GenerateOptions()
        name = str(source) if not isinstance(source, np.ndarray) else "the image"
        original = source if isinstance(source, np.ndarray) else load_portrait(source)
        if face is None:
            face = self._analyze(original, name, options)
        margin = self.face_analyzer.crop_margin * options.crop_margin if options.crop else None
        image_sq, crop_box, bbox = frame_portrait(original, face, self.modules.resolution, margin)
        tensor = torch.from_numpy(image_sq).permute(2, 0, 1)[None]
        encoding = self.modules.flow_ae.encode_source(
            tensor.to(device=self.device, dtype=self.dtype) / 255.0
        )
        source_emb = self._source_embedding(encoding, bbox, options.faithful)
        return Portrait(
            original, image_sq, face, crop_box, bbox, encoding, source_emb, options.faithful
        )

    def _analyze(self, original: np.ndarray, name: str, options: GenerateOptions) -> FaceState:
        try:
            return self.face_analyzer.analyze(original, name=name)
        except FaceNotFoundError:
            if options.crop:
                raise
            # --no-crop is what the no-face message suggests, so it must work without a face
            logger.warning("no face found in %s: animating it from a neutral head pose", name)
            return FaceState.whole_image(original.shape[:2])

    def _source_embedding(
        self, encoding: SourceEncoding, bbox: np.ndarray, faithful: bool
    ) -> Tensor:
        bbox_t = torch.as_tensor(bbox, dtype=self.dtype, device=self.device)[None]
        loc = self.modules.face_loc(bbox_mask(bbox_t, self.modules.resolution, faithful=faithful))
        return self.modules.unet.precompute_source(torch.cat([encoding.fea, loc], dim=1))

    def audio_condition(
        self, audio_16k: np.ndarray, num_frames: int, dtype: torch.dtype | None = None
    ) -> Tensor:
        """(F, A) per-frame audio features on the pipeline's device, in ``dtype`` (default: the
        pipeline's)."""
        if self.audio_features == "hubert":
            assert self.audio_encoder is not None
            feats = self.audio_encoder(audio_16k, num_frames)
        else:
            feats = log_mel_features(audio_16k, num_frames, n_mels=self.modules.unet.cfg.audio_dim)
        return feats.to(device=self.device, dtype=dtype or self.dtype)

    def motion(
        self,
        portrait: Portrait,
        audio_feats: Tensor,
        options: GenerateOptions,
        generator: torch.Generator,
        *,
        pose: np.ndarray | str | Path | None = None,
        blink: np.ndarray | str | Path | None = None,
        driving_video: str | Path | None = None,
        callback: ProgressCallback | None = None,
    ) -> Motion:
        """Per-frame head pose and eye state: PBNet from ``audio_feats`` (F, A), or the drivers.

        Args:
            pose, blink: absolute driver tracks (F, 6) / (F, 2) or ``.npy`` paths; replace PBNet's.
            driving_video: take pose and eyes from a video of another person (reenactment).
        """
        init_pose, init_eye = portrait.face.pose, portrait.face.eye
        num_frames = audio_feats.shape[0]
        pose_track, eye_track = driver_tracks(
            self.face_analyzer, pose, blink, driving_video, options.fps, callback
        )
        scale = 0.0 if options.motion_scale == 0 else options.motion_scale
        pose_delta, eye_delta = driver_motion(
            pose_track, eye_track, num_frames, init_pose, init_eye, motion_scale=scale
        )
        generated = None
        if pose_delta is None or eye_delta is None:
            generated = generate_motion(
                self.modules.pose,
                self.modules.blink,
                audio_feats,
                init_pose,
                init_eye,
                generator=generator,
                motion_scale=scale,
                blink=options.blink,
            )
        return combine_motion(generated, pose_delta, eye_delta, num_frames, init_pose, init_eye)

    @torch.no_grad()
    def sample_latents(
        self,
        portrait: Portrait,
        audio: Tensor,
        motion: Motion,
        options: GenerateOptions,
        generator: torch.Generator,
        callback: ProgressCallback | None = None,
        constrain: Callable[[Tensor, int], Tensor] | None = None,
    ) -> Tensor:
        """The clip's latent (flow x, flow y, occlusion) in one sampler pass: (1, 3, F, S/4, S/4).

        Args:
            audio: (F, A) audio features in the pipeline's dtype.
            constrain: the sampler's hook imposing known frames (``dawn.streaming``).
        """
        if options.sampler not in SAMPLERS:
            raise ValueError(f"sampler={options.sampler!r} must be one of {', '.join(SAMPLERS)}")
        options = self.with_model_defaults(options)
        unet = self.modules.unet
        source_emb = portrait.source_emb
        if portrait.faithful != options.faithful:
            source_emb = self._source_embedding(portrait.encoding, portrait.bbox, options.faithful)
        source_emb = source_emb.to(device=self.device, dtype=self.dtype)
        net = self._sampling_unet(options.compile)
        cond = torch.cat(
            [
                audio,
                torch.as_tensor(motion.pose_delta, dtype=self.dtype, device=self.device),
                torch.as_tensor(motion.eye_delta, dtype=self.dtype, device=self.device),
            ],
            dim=1,
        )[None]

        def denoise(null: bool) -> Callable[[Tensor, Tensor], Tensor]:
            return lambda x, t: net(
                x, t, cond, source_emb=source_emb, null_cond=null, window=options.window
            )

        denoise_fn = guided(denoise(False), denoise(True), options.guidance_scale)
        h, w = source_emb.shape[-2:]
        shape = (1, unet.cfg.latent_channels, audio.shape[0], h, w)
        diffusion = self.config.diffusion
        timesteps = ddim_timesteps(options.num_steps, diffusion.num_train_timesteps)
        alphas_cumprod = cosine_alphas_cumprod(
            diffusion.num_train_timesteps, diffusion.cosine_s, dtype=torch.float64
        )
        total = len(timesteps)

        def on_step(step: DDIMStep) -> None:
            if callback is not None:
                callback("denoise", step.index + 1, total)

        common = {
            "generator": generator,
            "threshold_quantile": diffusion.threshold_quantile,
            "device": self.device,
            "dtype": self.dtype,
            "callback": on_step,
            "constrain": constrain,
        }
        if options.sampler == "dpmpp-2m":
            return dpmpp_2m_sample(denoise_fn, shape, timesteps, alphas_cumprod, **common)
        return ddim_sample(
            denoise_fn,
            shape,
            timesteps,
            alphas_cumprod,
            eta=options.eta,
            faithful=options.faithful,
            **common,
        )

    def _sampling_unet(self, use_compile: bool) -> Callable[..., Tensor]:
        """The UNet as the sampler calls it: eager, or compiled once per pipeline and kept, so
        later calls of the same clip length reuse the compiled graph."""
        unet = self.modules.unet
        if not use_compile:
            return unet
        cached = self._compiled
        if cached is None or cached.module is not unet or cached.backend != self.compile_backend:
            cached = self._compiled = CompiledDenoiser(unet, self.compile_backend)
        return cached

    @torch.no_grad()
    def decode(
        self,
        portrait: Portrait,
        latents: Tensor,
        batch_size: int,
        callback: ProgressCallback | None = None,
    ) -> Iterator[np.ndarray]:
        """Latents (1, 3, F, h, w) -> batches of (n, S, S, 3) uint8 frames."""
        flow = latents[0, :2].permute(1, 2, 3, 0)  # (F, h, w, 2)
        occlusion = ((latents[0, 2:3] + 1) / 2).permute(1, 0, 2, 3)  # (F, 1, h, w)
        total, done = flow.shape[0], 0
        decoded = self.modules.flow_ae.decode_frames(
            portrait.encoding, flow, occlusion, batch_size=batch_size
        )
        for out in decoded:
            frames = out["prediction"].clamp(0, 1).mul(255).round().to(torch.uint8)
            done += frames.shape[0]
            if callback is not None:
                callback("decode", done, total)
            yield frames.permute(0, 2, 3, 1).cpu().numpy()

    def render(
        self,
        portrait: Portrait,
        latents: Tensor,
        options: GenerateOptions,
        callback: ProgressCallback | None = None,
    ) -> Iterator[np.ndarray]:
        """Latents (1, 3, F, h, w) -> the output batches: (n, S, S, 3) uint8 frames, or (n, H, W, 3)
        pasted back into the original portrait with ``options.paste_back``."""
        frames = self.decode(portrait, latents, options.decode_batch, callback)
        if not options.paste_back:
            return frames
        return (
            np.stack(
                [paste_back(portrait.original, f, portrait.crop_box, feather=8) for f in batch]
            )
            for batch in frames
        )

    def with_model_defaults(self, options: GenerateOptions) -> GenerateOptions:
        """``options.for_model``: what is left unset follows the model (a distilled UNet: logged)."""
        out = options.for_model(steps := self.modules.distilled_steps)
        if steps is not None and out != options:
            msg = "the UNet was distilled for %d deterministic DDIM steps: sampling %d at eta %g"
            logger.info(msg, steps, out.num_steps, out.eta)
        return out

    def seeded(
        self, options: GenerateOptions | None, generator: torch.Generator | None
    ) -> tuple[GenerateOptions, torch.Generator]:
        """The call's options, checked and completed (``with_model_defaults``), with the seed that
        reproduces it, and the generator to draw from (``pipelines.base.seeded_generator``)."""
        options = self.with_model_defaults(options or GenerateOptions())
        if options.num_steps < 1:  # type: ignore[operator]
            raise ValueError(f"num_steps={options.num_steps} must be >= 1")
        seed, generator = self.seeded_generator(options.seed, generator, self.device)
        return replace(options, seed=seed), generator

    # -- the call --------------------------------------------------------------------------------

    def __call__(
        self,
        source: Portrait | str | Path | np.ndarray,
        audio: str | Path | np.ndarray,
        options: GenerateOptions | None = None,
        *,
        generator: torch.Generator | None = None,
        callback: ProgressCallback | None = None,
        pose: np.ndarray | str | Path | None = None,
        blink: np.ndarray | str | Path | None = None,
        driving_video: str | Path | None = None,
    ) -> GenerationResult:
        """Animate a portrait speaking ``audio``.

        Args:
            source: a ``Portrait`` from ``prepare``, or a portrait path or (H, W, 3) uint8 RGB array.
            audio: speech file (any format PyAV decodes, or a video's audio track), or its
                (N,) float32 mono samples at 16 kHz (``media.audio.load_audio``).
            options: runtime knobs (``GenerateOptions``).
            generator: the random source; default: seeded from ``options.seed`` (drawn if None).
            callback: ``(stage, done, total)`` progress; raising from it stops the generation.
            pose, blink: absolute driver tracks (F, 6) / (F, 2) or ``.npy`` paths; replace PBNet's.
            driving_video: take pose and eyes from a video of another person (reenactment).
        Returns:
            ``GenerationResult`` whose ``frames`` yields uint8 batches lazily.
        """
        options, generator = self.seeded(options, generator)
        # the audio is checked first: decoding it is cheaper than the face analysis
        samples = audio if isinstance(audio, np.ndarray) else load_audio(audio)
        if samples.ndim != 1:
            raise ValueError(f"audio samples must be mono (N,), got shape {samples.shape}")
        portrait = source if isinstance(source, Portrait) else self.prepare(source, options)
        num_frames = num_video_frames(len(samples), fps=options.fps)
        # audio features and PBNet in float32 (motion.py: MOTION_DTYPE), even under a caller's
        # autocast; A2V-FDM reads the features in the pipeline's dtype
        with torch.autocast(self.device.type, enabled=False):
            feats32 = self.audio_condition(samples, num_frames, dtype=MOTION_DTYPE)
        motion = self.motion(
            portrait,
            feats32,
            options,
            generator,
            pose=pose,
            blink=blink,
            driving_video=driving_video,
            callback=callback,
        )
        latents = self.sample_latents(
            portrait, feats32.to(self.dtype), motion, options, generator, callback
        )
        frames = self.render(portrait, latents, options, callback)
        return GenerationResult(frames, num_frames, options.fps, options.seed, portrait, motion)
