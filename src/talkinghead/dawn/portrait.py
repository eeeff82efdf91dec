"""The prepared portrait of DAWN (``DawnPipeline.prepare``) and how the model's square image is framed.

The model animates an S x S image: with ``crop`` the face-centred square (``face.crop``, the
official framing), else the whole image squashed to S x S as the official does with an uncropped
input. ``Portrait`` keeps that image, where it came from and its encodings, so one portrait serves
any number of clips.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from PIL import Image
from torch import Tensor

from talkinghead.dawn.models.flow_autoencoder import SourceEncoding
from talkinghead.face.analysis import FaceState
from talkinghead.face.crop import crop_and_resize, face_bbox_in_crop, square_crop_box


@dataclass
class Portrait:
    """A prepared source portrait, reusable for any number of audio clips.

    Attributes:
        original: (H, W, 3) uint8 RGB as loaded.
        image: (S, S, 3) uint8 RGB the model animates (face-centred crop, or the whole image).
        face: the analysis of the original (pose and eyes used as the initial state).
        crop_box: ``(x0, y0, x1, y1)`` of ``image`` in ``original`` pixels.
        bbox: (6,) ``[x_min, x_max, y_min, y_max, H, W]`` of the face in ``image`` pixels.
        encoding: the LFG encoder's features of ``image`` (decoding and the A2V-FDM condition).
        source_emb: (1, dim, S/4, S/4) the UNet's first-conv response to the frame-invariant inputs
            (LFG feature + face location), computed with ``faithful``.
        faithful: whether the face-location mask used the official (swapped-axes) box.
    """

    original: np.ndarray
    image: np.ndarray
    face: FaceState
    crop_box: tuple[int, int, int, int]
    bbox: np.ndarray
    encoding: SourceEncoding
    source_emb: Tensor
    faithful: bool


def frame_portrait(
    original: np.ndarray, face: FaceState, size: int, margin: float | None
) -> tuple[np.ndarray, tuple[int, int, int, int], np.ndarray]:
    """The S x S image the model animates.

    Args:
        original: (H, W, 3) uint8 RGB.
        face: its analysis (``box`` in original pixels).
        size: S.
        margin: the square crop's margin around the face (``square_crop_box``), or None for the
            whole image squashed to S x S (no aspect preservation, as the official).
    Returns:
        ``(image, crop_box, bbox)``: (S, S, 3) uint8, ``(x0, y0, x1, y1)`` of the image in original
        pixels, (6,) float32 ``[x_min, x_max, y_min, y_max, H, W]`` of the face in image pixels.
    """
    if margin is not None:
        crop_box = square_crop_box(face.box, original.shape[:2], margin)
        bbox = face_bbox_in_crop(face.box, crop_box).astype(np.float32)
        return crop_and_resize(original, crop_box, size), crop_box, bbox
    h, w = original.shape[:2]
    x0, y0, x1, y1 = face.box[:4]
    bbox = np.array([x0, x1, y0, y1, h, w], np.float32)
    image = np.array(Image.fromarray(original).resize((size, size), Image.BILINEAR))
    return image, (0, 0, w, h), bbox
