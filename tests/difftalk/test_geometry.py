"""DiffTalk face geometry on a known 68-point face, and the audio windows."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from talkinghead.difftalk.audio_windows import frame_windows, load_feature_file, smooth_windows
from talkinghead.difftalk.geometry import (
    INFERENCE_MASK_LANDMARK,
    TRAINING_MASK_LANDMARK,
    UPPER_FACE,
    blend_mask,
    inference_mask,
    landmarks_to_crop,
    masked_frame,
    paste_lower_face,
    smooth_boxes,
    upper_face_landmarks,
)

from .conftest import face_landmarks

SIZE, LATENT = 256, 64


@pytest.fixture
def face() -> np.ndarray:
    """The template face filling a 256-px crop: centre (128, 110), half width 80 px."""
    return face_landmarks(128.0, 110.0, 80.0)


def test_upper_face_points_carry_no_lip_shape(face: np.ndarray) -> None:
    upper = upper_face_landmarks(face)
    assert upper.shape == (39, 2) and upper.dtype == np.float32
    assert set(UPPER_FACE) == {0, 1, 2, 3, *range(13, 48)}
    assert not set(UPPER_FACE) & {*range(4, 13), *range(48, 68)}
    # moving the lips or the chin does not change what LdmNet sees
    moved = face.copy()
    moved[48:68, 1] += 10
    moved[4:13, 1] += 5
    assert np.array_equal(upper_face_landmarks(moved), upper)


def test_masked_frame_cuts_at_the_nose(face: np.ndarray) -> None:
    crop = np.full((SIZE, SIZE, 3), 200, np.uint8)
    inference = masked_frame(crop, face, INFERENCE_MASK_LANDMARK)
    training = masked_frame(crop, face, TRAINING_MASK_LANDMARK)
    row33, row30 = int(face[33, 1]), int(face[30, 1])
    assert row30 < row33  # the nose tip is above the nose base: training hides more
    assert (inference[row33:] == 0).all() and (inference[:row33] == 200).all()
    assert (training[row30:] == 0).all() and (training[:row30] == 200).all()
    assert (crop == 200).all(), "the input crop must not be modified"


def test_inference_mask_covers_the_mouth_and_keeps_the_eyes(face: np.ndarray) -> None:
    mask = inference_mask(face, SIZE, LATENT)
    assert mask.shape == (LATENT, LATENT) and set(np.unique(mask)) == {0.0, 1.0}
    cell = (face * LATENT / SIZE).astype(int)
    assert all(mask[y, x] == 0 for x, y in cell[48:68]), "every lip point must be regenerated"
    assert all(mask[y, x] == 1 for x, y in cell[17:27]), "brows are kept"
    assert all(mask[y, x] == 1 for x, y in cell[36:48]), "eyes are kept"
    assert mask[0].all() and mask[:, 0].all()
    # the generated region lies below the nose base (point 33) apart from the jaw line's ends
    assert not (mask[: int(cell[2:15, 1].min()) - 1] == 0).any()


def test_landmarks_to_crop_and_paste_back(face: np.ndarray) -> None:
    frame_points = face / 2 + np.array([40, 20])  # the face at half size, shifted, in a frame
    box = (40, 20, 168, 148)  # 128-px square around it
    assert np.allclose(landmarks_to_crop(frame_points, box, SIZE), face)
    frame = np.full((200, 220, 3), 50, np.uint8)
    crop = np.full((SIZE, SIZE, 3), 250, np.uint8)
    out = paste_lower_face(frame, crop, blend_mask(face, SIZE), box)
    mouth = frame_points[48:68].mean(0).astype(int)
    eye = frame_points[36].astype(int)
    assert out[mouth[1], mouth[0]].min() > 240, "the mouth comes from the generated crop"
    assert (out[eye[1], eye[0]] == 50).all(), "the eyes stay the frame's own"
    assert (out[:20] == 50).all() and (out[:, :40] == 50).all(), "nothing outside the box changes"


def test_smooth_boxes_skip_faceless_frames() -> None:
    boxes = np.array([[0, 0, 10, 10], [np.nan] * 4, [2, 2, 12, 12], [4, 4, 14, 14]], float)
    out = smooth_boxes(boxes, 3)
    assert np.isnan(out[1]).all()
    assert np.allclose(out[0], [1, 1, 11, 11]) and np.allclose(out[2], [2, 2, 12, 12])
    assert np.array_equal(smooth_boxes(boxes, 1)[[0, 2, 3]], boxes[[0, 2, 3]])


def test_audio_windows_are_centred_on_their_frame() -> None:
    features = torch.arange(20.0)[:, None].repeat(1, 3)  # 10 steps at 50 Hz = 5 frames
    windows = frame_windows(features, 5)
    assert windows.shape == (5, 16, 3)
    assert windows[2, 8, 0] == 4.0  # step 2 i lies at the window centre
    assert (windows[0, :8] == 0).all()  # zero padding before the clip
    smooth = smooth_windows(windows)
    assert smooth.shape == (5, 8, 16, 3)
    assert torch.equal(smooth[2, 4], windows[2]) and torch.equal(smooth[2, 0], windows[0] * 0)
    assert torch.equal(smooth[4, 3], windows[3])


def test_feature_file_shapes(tmp_path) -> None:
    np.save(tmp_path / "ds.npy", np.zeros((7, 16, 29), np.float32))
    assert load_feature_file(tmp_path / "ds.npy").shape == (7, 8, 16, 29)
    np.save(tmp_path / "bad.npy", np.zeros((7, 29), np.float32))
    with pytest.raises(ValueError, match=r"DeepSpeech windows \(N, 16, 29\)"):
        load_feature_file(tmp_path / "bad.npy")
