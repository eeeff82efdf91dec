"""Preparing a video (or a still portrait) for DiffTalk: faces, crops, landmarks, masks, latents.

Per frame: the largest detected face; its box smoothed over time (``geometry.smooth_boxes``) so
the crop does not jitter; a face-centred square crop at the model's size; 68 landmarks from the
project's face backend (``data/face.py``: FaceBoxes + the 3DDFA_V2 regressor's 68-point head)
moved into crop pixels; the masked frame (rows below landmark 33 black), the latent-resolution
inference mask and the VQ latents of the crop and of the masked crop. The reference latent (the
official uses the video's first frame) is encoded once. Everything is cached in
``DiffTalkPrepared`` and reused for any number of audio clips. Frames without a face keep no crop
and pass through generation unchanged.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import cv2
import numpy as np
import torch
from torch import Tensor

from talkinghead.difftalk.geometry import (
    INFERENCE_MASK_LANDMARK,
    inference_mask,
    landmarks_to_crop,
    masked_frame,
    smooth_boxes,
    upper_face_landmarks,
)
from talkinghead.difftalk.networks import encode_images
from talkinghead.face.analysis import FaceAnalyzer, FaceNotFoundError, largest_face
from talkinghead.face.crop import crop_and_resize, square_crop_box
from talkinghead.media.image import load_portrait, rgb_to_bgr
from talkinghead.media.video import read_video_frames, video_fps
from talkinghead.pipelines.base import ProgressCallback

VIDEO_SUFFIXES = (".mp4", ".mov", ".mkv", ".avi", ".webm", ".m4v")


class FaceBackend(Protocol):
    """What DiffTalk needs from face analysis."""

    def detect(self, image_rgb: np.ndarray) -> np.ndarray:
        """(N, 5) ``[x0, y0, x1, y1, score]`` boxes in pixels."""
        ...

    def landmarks(self, image_rgb: np.ndarray, box: np.ndarray) -> np.ndarray:
        """(68, 2) landmarks in pixels of the face inside ``box``."""
        ...


# FaceBoxes misses most faces in small frames: in 64-px synthetic clips it found 2 to 100 of 100
# faces per clip at 64 px, every one at 128 and 256 px.
MIN_DETECT_SIDE = 256


class AnalyzerBackend:
    """``FaceAnalyzer`` as a ``FaceBackend``: FaceBoxes (or Haar) boxes, 3DDFA_V2 68-point landmarks.

    Frames whose short side is under ``MIN_DETECT_SIDE`` are enlarged (bicubic, by an integer
    factor) for detection only; the boxes come back in the frame's pixels.
    """

    def __init__(self, analyzer: FaceAnalyzer):
        self.analyzer = analyzer

    def detect(self, image_rgb: np.ndarray) -> np.ndarray:
        scale = -(-MIN_DETECT_SIDE // min(image_rgb.shape[:2]))  # ceil
        if scale <= 1:
            return self.analyzer.detect(image_rgb)
        big = cv2.resize(image_rgb, None, fx=scale, fy=scale, interpolation=cv2.INTER_CUBIC)
        boxes = np.array(self.analyzer.detect(big), np.float64)
        boxes[:, :4] /= scale
        return boxes

    def landmarks(self, image_rgb: np.ndarray, box: np.ndarray) -> np.ndarray:
        if self.analyzer.regressor is None:
            raise ValueError(
                "DiffTalk needs 68-point face landmarks: pass the 3DDFA_V2 folder (face3d_dir) "
                "that holds the landmark regressor."
            )
        return self.analyzer.regress(rgb_to_bgr(image_rgb), box)[1]


@dataclass
class DiffTalkPrepared:
    """A video (or a still) ready for any number of audio clips. F = frames, h = latent side.

    Attributes:
        frames: (F, H, W, 3) uint8 RGB, as decoded.
        fps: the source frame rate (25 for a still).
        is_still: the source was one image (its frame repeats for the whole audio).
        has_face: (F,) bool; frames without a face pass through unchanged.
        crop_boxes: (F, 4) int ``[x0, y0, x1, y1]`` in frame pixels (-1 rows without a face).
        landmarks: (F, 68, 2) float32 in crop pixels (NaN without a face).
        latents: (F, 3, h, w) VQ latents of the crops (target frames; kept region at sampling).
        masked_latents: (F, 3, h, w) latents of the crops with the lower face black.
        masks: (F, 1, h, w) keep masks (1 keep, 0 generate).
        reference_index: the frame whose latent is the reference.
        reference_latent: (1, 3, h, w), encoded once.
    """

    frames: np.ndarray
    fps: float
    is_still: bool
    has_face: np.ndarray
    crop_boxes: np.ndarray
    landmarks: np.ndarray
    latents: Tensor
    masked_latents: Tensor
    masks: Tensor
    reference_index: int
    reference_latent: Tensor

    @property
    def num_frames(self) -> int:
        return int(self.frames.shape[0])

    def upper_landmarks(self, index: np.ndarray) -> Tensor:
        """(n, 39, 2) LdmNet input of frames ``index`` (which must have a face)."""
        points = np.stack([upper_face_landmarks(self.landmarks[i]) for i in index])
        return torch.from_numpy(points)


def load_frames(source: str | Path | np.ndarray) -> tuple[np.ndarray, float, bool, str]:
    """A video file, an image file or an (H, W, 3) / (F, H, W, 3) uint8 array -> (frames, fps, still, name)."""
    if isinstance(source, np.ndarray):
        if source.dtype != np.uint8 or source.ndim not in (3, 4) or source.shape[-1] != 3:
            raise ValueError(
                f"expected (H, W, 3) or (F, H, W, 3) uint8 RGB, got {source.shape} {source.dtype}."
            )
        still = source.ndim == 3
        return (source[None] if still else source), 25.0, still, "the frames"
    path = Path(source)
    if not path.is_file():
        raise FileNotFoundError(f"{path} does not exist; pass a video or an image of the person.")
    if path.suffix.lower() in VIDEO_SUFFIXES:
        decoded = list(read_video_frames(path))
        if not decoded:
            raise ValueError(f"{path} has no frames; pass a video with at least one frame.")
        return np.stack(decoded), video_fps(path), False, str(path)
    return load_portrait(path)[None], 25.0, True, str(path)


def _to_model(images: np.ndarray, device: torch.device, dtype: torch.dtype) -> Tensor:
    """(n, S, S, 3) uint8 -> (n, 3, S, S) in [-1, 1] (the official /127.5 - 1)."""
    x = torch.from_numpy(images).permute(0, 3, 1, 2).to(device=device, dtype=torch.float32)
    return (x / 127.5 - 1.0).to(dtype)


@torch.no_grad()
def prepare_frames(
    frames: np.ndarray,
    *,
    backend: FaceBackend,
    first_stage: torch.nn.Module,
    image_size: int,
    latent_size: int,
    crop: bool = True,
    crop_margin: float = 1.7,
    box_smoothing: int = 9,
    reference_frame: int | None = None,
    batch_size: int = 8,
    name: str = "the video",
    fps: float = 25.0,
    is_still: bool = False,
    callback: ProgressCallback | None = None,
) -> DiffTalkPrepared:
    """Detect, smooth, crop, landmark, mask and encode every frame (see the module docstring)."""
    if frames.shape[0] == 0:
        raise ValueError(f"{name} has no frames; pass a video with at least one frame.")
    num, height, width = frames.shape[:3]
    raw = np.full((num, 4), np.nan)
    for i, frame in enumerate(frames):
        found = backend.detect(frame)
        if len(found):
            raw[i] = largest_face(found)[:4]
        if callback is not None:
            callback("detect", i + 1, num)
    has_face = ~np.isnan(raw).any(axis=1)
    if not has_face.any():
        raise FaceNotFoundError(
            f"no face found in any frame of {name}: DiffTalk needs a clearly visible, roughly "
            "frontal face."
        )
    boxes = smooth_boxes(raw, box_smoothing)
    crop_boxes = np.full((num, 4), -1, np.int64)
    landmarks = np.full((num, 68, 2), np.nan, np.float32)
    crops = np.zeros((num, image_size, image_size, 3), np.uint8)
    masked = np.zeros_like(crops)
    masks = np.ones((num, 1, latent_size, latent_size), np.float32)
    for i in np.flatnonzero(has_face):
        box = (
            square_crop_box(boxes[i], (height, width), crop_margin)
            if crop
            else (0, 0, width, height)
        )
        crop_boxes[i] = box
        points = landmarks_to_crop(backend.landmarks(frames[i], boxes[i]), box, image_size)
        landmarks[i] = points
        crops[i] = crop_and_resize(frames[i], box, image_size)
        masked[i] = masked_frame(crops[i], points, INFERENCE_MASK_LANDMARK)
        masks[i, 0] = inference_mask(points, image_size, latent_size)
    param = next(first_stage.parameters())
    latents, masked_latents = [], []
    for start in range(0, num, batch_size):
        stop = min(start + batch_size, num)
        latents.append(
            encode_images(first_stage, _to_model(crops[start:stop], param.device, param.dtype))
        )
        masked_latents.append(
            encode_images(first_stage, _to_model(masked[start:stop], param.device, param.dtype))
        )
        if callback is not None:
            callback("encode", stop, num)
    reference = int(np.flatnonzero(has_face)[0]) if reference_frame is None else reference_frame
    if not (0 <= reference < num and has_face[reference]):
        raise ValueError(
            f"reference_frame={reference_frame} must be a frame with a face (0..{num - 1})."
        )
    all_latents = torch.cat(latents)
    return DiffTalkPrepared(
        frames=frames,
        fps=fps,
        is_still=is_still,
        has_face=has_face,
        crop_boxes=crop_boxes,
        landmarks=landmarks,
        latents=all_latents,
        masked_latents=torch.cat(masked_latents),
        masks=torch.from_numpy(masks).to(device=param.device, dtype=param.dtype),
        reference_index=reference,
        reference_latent=all_latents[reference : reference + 1].clone(),
    )
