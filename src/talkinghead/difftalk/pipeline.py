"""DiffTalkPipeline: a person's video (or a still) + speech -> the video with the lower face lip-synced.

Stages (difftalk_spec.md §2): ``prepare`` (faces, crops, landmarks, masks, latents; cached and
reusable) -> audio windows (DeepSpeech from a file for fidelity, else the model's own log-mel or
HuBERT) -> per batch of frames: the context (AudioNet / AudioAttNet / LdmNet), masked DDIM in the
VQ latent space (official: 200 steps, eta 0, the kept region re-noised from the frame's own
latent before every call), VQ decoding -> the regenerated lower face pasted back into the
uncropped frame. Frames are independent, so they batch; frames without a face pass through
unchanged and are counted in the result.

Output length: one frame per audio window (25 fps). A video shorter than the audio is played
forwards and backwards (ping-pong) until the audio ends; a longer one is cut. A still repeats.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

import cv2
import numpy as np
import torch
from torch import Tensor

from talkinghead.difftalk.audio_windows import (
    frame_windows,
    load_feature_file,
    logmel_condition,
    smooth_windows,
)
from talkinghead.difftalk.configs import DiffTalkOptions
from talkinghead.difftalk.geometry import blend_mask, paste_lower_face
from talkinghead.difftalk.model_dir import DiffTalkModules, load_model_dir
from talkinghead.difftalk.networks import decode_latents, predict_eps
from talkinghead.difftalk.prepare import (
    AnalyzerBackend,
    DiffTalkPrepared,
    FaceBackend,
    load_frames,
    prepare_frames,
)
from talkinghead.diffusion.masked_ddim import masked_ddim_sample
from talkinghead.diffusion.schedules import buffers_from_betas, scaled_linear_betas
from talkinghead.face.analysis import FaceAnalyzer
from talkinghead.face.crop import CROP_MARGIN
from talkinghead.media.audio import load_audio, num_video_frames
from talkinghead.pipelines.base import GenerationResult, ProgressCallback, TalkingHeadPipeline

logger = logging.getLogger(__name__)


@dataclass
class DiffTalkResult(GenerationResult):
    """``GenerationResult`` plus the number of output frames that had no face and passed through
    unchanged; ``motion`` stays None (DiffTalk generates no head motion)."""

    faceless_frames: int = 0


def frame_order(num_source: int, num_out: int, still: bool) -> np.ndarray:
    """Source frame index of each output frame: ping-pong through the video, or the still repeated."""
    if still or num_source == 1:
        return np.zeros(num_out, np.int64)
    cycle = np.concatenate([np.arange(num_source), np.arange(num_source - 2, 0, -1)])
    return cycle[np.arange(num_out) % len(cycle)]


class DiffTalkPipeline(TalkingHeadPipeline):
    """DiffTalk inference over loaded networks.

    Args:
        modules: the three networks and the config (``model_dir.load_model_dir``).
        face_backend: face boxes and 68-point landmarks (``AnalyzerBackend`` over ``FaceAnalyzer``).
        audio_encoder: a HuBERT extractor, for models trained on HuBERT features.
    """

    family: ClassVar[str] = "difftalk"
    options_class: ClassVar[type] = DiffTalkOptions

    def __init__(self, modules: DiffTalkModules, *, face_backend: FaceBackend, audio_encoder=None):
        self.modules = modules
        self.config = modules.config
        self.face_backend = face_backend
        self.audio_encoder = audio_encoder
        for net in modules.networks().values():
            net.eval().requires_grad_(False)
        cfg = self.config
        betas = scaled_linear_betas(cfg.num_train_steps, cfg.beta_start, cfg.beta_end)
        self.alphas_cumprod = buffers_from_betas(betas)["alphas_cumprod"]

    @classmethod
    def from_pretrained(
        cls,
        path: str | Path,
        *,
        device: str | torch.device = "cpu",
        dtype: torch.dtype = torch.float32,
        face3d_dir: str | Path | None = None,
        hubert_path: str | Path | None = None,
    ) -> DiffTalkPipeline:
        """Load a DiffTalk model directory; ``face3d_dir`` holds the 3DDFA_V2 face assets."""
        modules = load_model_dir(path, device=device, dtype=dtype)
        encoder = None
        if modules.config.audio_features == "hubert":
            if hubert_path is None:
                raise ValueError("this DiffTalk model uses HuBERT features: pass hubert_path.")
            from talkinghead.media.audio_features import HubertFeatureExtractor

            encoder = HubertFeatureExtractor.from_pretrained(hubert_path, device=device)
        backend = AnalyzerBackend(FaceAnalyzer(face3d_dir, device=device))
        return cls(modules, face_backend=backend, audio_encoder=encoder)

    @property
    def device(self) -> torch.device:
        return next(self.modules.unet.parameters()).device

    @property
    def dtype(self) -> torch.dtype:
        return next(self.modules.unet.parameters()).dtype

    def to(self, device: str | torch.device, dtype: torch.dtype | None = None) -> DiffTalkPipeline:
        for net in self.modules.networks().values():
            net.to(device=device, dtype=dtype) if dtype is not None else net.to(device)
        return self

    def prepare(
        self,
        source: str | Path | np.ndarray,
        options: DiffTalkOptions | None = None,
        *,
        callback: ProgressCallback | None = None,
    ) -> DiffTalkPrepared:
        """Faces, crops, landmarks, masks and latents of a video / image (reusable for many clips)."""
        options = options or DiffTalkOptions()
        frames, fps, still, name = load_frames(source)
        if not still and abs(fps - options.fps) > 0.01:
            logger.warning(
                "%s runs at %.3g fps; DiffTalk frames are matched to audio at %d fps",
                name,
                fps,
                options.fps,
            )
        return prepare_frames(
            frames,
            backend=self.face_backend,
            first_stage=self.modules.first_stage,
            image_size=self.config.image_size,
            latent_size=self.config.latent_size,
            crop=options.crop,
            crop_margin=CROP_MARGIN * options.crop_margin,
            box_smoothing=options.box_smoothing,
            reference_frame=options.reference_frame,
            batch_size=options.batch_size,
            name=name,
            fps=fps,
            is_still=still,
            callback=callback,
        )

    def audio_condition(
        self, audio: str | Path | np.ndarray | None, options: DiffTalkOptions
    ) -> Tensor:
        """(N, 8, 16, C) audio windows, one per output frame."""
        channels = self.config.condition.audio_channels
        samples = None
        if audio is not None:
            samples = (
                load_audio(audio)
                if not isinstance(audio, np.ndarray)
                else np.asarray(audio, np.float32)
            )
            if samples.ndim != 1 or samples.size == 0:
                raise ValueError(
                    f"audio must be (N,) mono 16 kHz samples, got shape {samples.shape}."
                )
        if options.audio_features is not None:
            windows = load_feature_file(options.audio_features, channels)
            if samples is not None:
                expected = num_video_frames(samples.shape[0], fps=options.fps)
                if abs(expected - windows.shape[0]) > 1:
                    raise ValueError(
                        f"{options.audio_features} has {windows.shape[0]} windows but the audio lasts "
                        f"{expected} frames at {options.fps} fps; pass the features of this audio."
                    )
            return windows
        if samples is None:
            raise ValueError("pass the speech audio (or --audio-features with DeepSpeech windows).")
        num = num_video_frames(samples.shape[0], fps=options.fps)
        if num < 1:
            raise ValueError("the audio is shorter than one video frame.")
        kind = self.config.audio_features
        if kind == "logmel":
            return logmel_condition(samples, num, n_mels=channels)
        if kind == "hubert":
            if self.audio_encoder is None:
                raise ValueError("this DiffTalk model uses HuBERT features: pass hubert_path.")
            feats = self.audio_encoder(samples, 2 * num).float().cpu()  # -> (2F, hidden), 50 Hz
            if feats.shape[1] != channels:
                raise ValueError(
                    f"the HuBERT gives {feats.shape[1]} features per step but this model's audio "
                    f"encoder reads {channels}; pass the HuBERT it was trained with."
                )
            return smooth_windows(frame_windows(feats, num))
        raise ValueError(
            "this DiffTalk model was trained on DeepSpeech windows, which the toolkit cannot compute: "
            "pass --audio-features with the (N, 16, 29) windows of AD-NeRF's extractor."
        )

    def __call__(
        self,
        source: DiffTalkPrepared | str | Path | np.ndarray,
        audio: str | Path | np.ndarray | None,
        options: DiffTalkOptions | None = None,
        *,
        generator: torch.Generator | None = None,
        callback: ProgressCallback | None = None,
    ) -> DiffTalkResult:
        """Lip-sync ``source`` to ``audio``; frames are generated lazily when the result is consumed."""
        options = options or DiffTalkOptions()
        if options.sampler != "ddim":
            raise ValueError(f"sampler={options.sampler!r}: DiffTalk samples with 'ddim' only.")
        steps = options.num_steps or self.config.num_steps
        if steps < 1 or steps > self.config.num_train_steps:
            raise ValueError(f"num_steps={steps} must be in 1..{self.config.num_train_steps}.")
        prepared = (
            source
            if isinstance(source, DiffTalkPrepared)
            else self.prepare(source, options, callback=callback)
        )
        windows = self.audio_condition(audio, options)
        order = frame_order(prepared.num_frames, windows.shape[0], prepared.is_still)
        seed, generator = self.seeded_generator(options.seed, generator)
        frames = self._generate(prepared, windows, order, steps, options, generator, callback)
        faceless = int((~prepared.has_face[order]).sum())
        if faceless:
            logger.info(
                "%d of %d frames have no face and pass through unchanged", faceless, len(order)
            )
        return DiffTalkResult(frames, len(order), options.fps, seed, prepared, None, faceless)

    @torch.no_grad()
    def _generate(
        self,
        prepared: DiffTalkPrepared,
        windows: Tensor,
        order: np.ndarray,
        steps: int,
        options: DiffTalkOptions,
        generator: torch.Generator,
        callback: ProgressCallback | None,
    ) -> Iterator[np.ndarray]:
        m, device, dtype = self.modules, self.device, self.dtype
        size = self.config.image_size
        batches = [
            np.arange(s, min(s + options.batch_size, len(order)))
            for s in range(0, len(order), options.batch_size)
        ]
        total = sum(steps for b in batches if prepared.has_face[order[b]].any())
        done = 0
        for out_index in batches:
            src = order[out_index]
            face = prepared.has_face[src]
            crops: dict[int, np.ndarray] = {}
            if face.any():
                sel, rows = src[face], torch.from_numpy(np.flatnonzero(face))
                z0 = prepared.latents[sel]
                context = m.condition(
                    windows[out_index[face]].to(device=device, dtype=dtype),
                    prepared.upper_landmarks(sel).to(device=device, dtype=dtype),
                )
                z_masked = prepared.masked_latents[sel]
                z_ref = prepared.reference_latent.expand(len(sel), -1, -1, -1)

                def denoise(
                    x: Tensor, t: Tensor, z_masked=z_masked, z_ref=z_ref, context=context
                ) -> Tensor:
                    return predict_eps(m.unet, x, t, z_masked, z_ref, context)

                def on_step(step, done=done) -> None:
                    if callback is not None:
                        callback("denoise", done + step.index + 1, total)

                z = masked_ddim_sample(
                    denoise,
                    z0,
                    prepared.masks[sel],
                    self.alphas_cumprod,
                    steps,
                    generator=generator,
                    on_step=on_step,
                )
                done += steps
                images = ((decode_latents(m.first_stage, z).float() + 1) / 2).clamp(0, 1)
                images = images.mul(255).round().to(torch.uint8).permute(0, 2, 3, 1).cpu().numpy()
                crops = dict(zip(rows.tolist(), images, strict=True))
            yield np.stack(
                [
                    self._compose(prepared, int(s), crops.get(k), size, options)
                    for k, s in enumerate(src)
                ]
            )

    @staticmethod
    def _compose(
        prepared: DiffTalkPrepared,
        index: int,
        crop: np.ndarray | None,
        size: int,
        options: DiffTalkOptions,
    ) -> np.ndarray:
        """One output frame: the generated lower face pasted back, or the source frame as is."""
        frame = prepared.frames[index]
        if not options.paste_back:
            if crop is not None:
                return crop
            return cv2.resize(frame, (size, size), interpolation=cv2.INTER_AREA)
        if crop is None:
            return frame
        box = tuple(int(v) for v in prepared.crop_boxes[index])
        return paste_lower_face(frame, crop, blend_mask(prepared.landmarks[index], size), box)
