"""Face detection, 3DDFA pose / eyes, bbox and square crop on the shared portraits and 3DDFA_V2 assets."""

from __future__ import annotations

import logging
import pickle
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from talkinghead.face import analysis as face_mod
from talkinghead.face.analysis import (
    FaceAnalyzer,
    FaceNotFoundError,
    bfm_landmarks,
    eye_ratios,
    haar_available,
    load_bfm_keypoints,
    pose_from_params,
    roi_box_from_bbox,
)
from talkinghead.face.crop import CROP_MARGIN, crop_and_resize, paste_back, square_crop_box
from talkinghead.face.faceboxes import FaceBoxes, nms, prior_boxes
from talkinghead.face.pose_regressor import clean_state_dict, load_face_regressor
from talkinghead.media.image import load_portrait

# three of the six shared portraits (drawn, female, male) keep the suite fast
PORTRAITS = ("anime_female2.jpeg", "real_female4.jpeg", "real_male1.jpeg")


@pytest.fixture(scope="module")
def analyzer(media_dir: Path) -> FaceAnalyzer:
    return FaceAnalyzer.from_dir(media_dir / "face3d")


def test_shared_weights_load_strict(media_dir: Path) -> None:
    sd = torch.load(
        media_dir / "face3d" / "FaceBoxesProd.pth", map_location="cpu", weights_only=True
    )
    result = FaceBoxes().load_state_dict(sd, strict=True)
    assert not result.missing_keys and not result.unexpected_keys
    ckpt = torch.load(
        media_dir / "face3d" / "mb05_120x120.pth", map_location="cpu", weights_only=True
    )
    model = load_face_regressor(clean_state_dict(ckpt))
    assert model.cfg.widen_factor == 0.5
    params, lm = model(torch.zeros(2, 3, 120, 120))
    assert params.shape == (2, 62) and lm.shape == (2, 136)


def test_prior_count_matches_heads_for_odd_sizes() -> None:
    net = FaceBoxes().eval()
    for h, w in ((100, 130), (64, 64)):
        loc, scores = net(torch.zeros(1, 3, h, w))
        assert loc.shape[1] == scores.shape[1] == prior_boxes(h, w).shape[0]


def test_nms_matches_bruteforce() -> None:
    gen = torch.Generator().manual_seed(0)
    xy = torch.rand(60, 2, generator=gen) * 100
    boxes = torch.cat([xy, xy + 10 + torch.rand(60, 2, generator=gen) * 40], dim=1)
    scores = torch.rand(60, generator=gen)
    kept = nms(boxes, scores, 0.3).tolist()
    expected: list[int] = []
    for i in scores.argsort(descending=True).tolist():
        b = boxes[i]
        ok = True
        for j in expected:
            c = boxes[j]
            iw = (min(b[2], c[2]) - max(b[0], c[0]) + 1).clamp_min(0)
            ih = (min(b[3], c[3]) - max(b[1], c[1]) + 1).clamp_min(0)
            inter = iw * ih
            area_b = (b[2] - b[0] + 1) * (b[3] - b[1] + 1)
            area_c = (c[2] - c[0] + 1) * (c[3] - c[1] + 1)
            if inter / (area_b + area_c - inter) >= 0.3:
                ok = False
        if ok:
            expected.append(i)
    assert kept == expected


@pytest.mark.parametrize("name", PORTRAITS)
def test_portrait_pose_eyes_bbox_and_crop(
    analyzer: FaceAnalyzer, media_dir: Path, name: str
) -> None:
    img = load_portrait(media_dir / "portraits" / name)
    h, w = img.shape[:2]
    boxes = analyzer.detect(img)
    assert len(boxes) == 1 and boxes[0, 4] > 0.9
    state = analyzer.analyze(img, name=name)
    x0, y0, x1, y1, _ = state.box
    assert 0 <= x0 < x1 <= w and 0 <= y0 < y1 <= h
    yaw, pitch, roll, s, tx, ty = state.pose
    assert max(abs(yaw), abs(pitch), abs(roll)) < 45
    assert 1e-4 < s < 2e-3 and 40 < tx < 80 and 50 < ty < 90
    assert state.eye.shape == (2,) and ((0.1 < state.eye) & (state.eye < 0.5)).all()
    assert state.landmarks is not None and state.landmarks.shape == (68, 2)
    cx0, cy0, cx1, cy1 = state.crop_box
    side = cx1 - cx0
    assert side == cy1 - cy0 > 0
    assert cx0 <= x0 and cy0 <= y0 + 1 and x1 <= cx1 and y1 <= cy1 + 1
    xmin, xmax, ymin, ymax, bh, bw = state.bbox_crop
    assert bh == bw == side and 0 <= xmin < xmax < side and 0 <= ymin < ymax < side
    assert state.detector == "faceboxes"


def test_large_image_is_downscaled_for_detection(analyzer: FaceAnalyzer, media_dir: Path) -> None:
    img = load_portrait(media_dir / "portraits" / "real_male2.jpeg")
    big = cv2.resize(img, (1700, 1600), interpolation=cv2.INTER_CUBIC)
    small_box = analyzer.detect(img)[0, :4] * np.array([1700 / 427, 1600 / 427] * 2)
    big_box = analyzer.detect(big)[0, :4]
    assert np.abs(big_box - small_box).max() < 0.05 * 1600


def test_blank_and_noise_raise_face_not_found(analyzer: FaceAnalyzer) -> None:
    noise = np.random.default_rng(0).integers(0, 256, (240, 320, 3), dtype=np.uint8)
    for img in (np.full((200, 200, 3), 128, np.uint8), noise):
        with pytest.raises(FaceNotFoundError, match="no face found in blank.png"):
            analyzer.analyze(img, name="blank.png")


def test_fallback_without_weights(media_dir: Path, caplog: pytest.LogCaptureFixture) -> None:
    img = load_portrait(media_dir / "portraits" / "real_female4.jpeg")
    with caplog.at_level(logging.WARNING):
        state = FaceAnalyzer(None).analyze(img)
    assert "no face3d weights" in caplog.text
    assert state.detector == ("haar" if haar_available() else "centre")
    np.testing.assert_allclose(state.pose, face_mod.NEUTRAL_POSE)
    np.testing.assert_allclose(state.eye, face_mod.DEFAULT_EYE)
    ref = np.array([123.3, 83.1, 320.6, 369.2])  # FaceBoxes box of this portrait
    b = state.box[:4]
    inter = np.prod(np.clip(np.minimum(b[2:], ref[2:]) - np.maximum(b[:2], ref[:2]), 0, None))
    union = np.prod(b[2:] - b[:2]) + np.prod(ref[2:] - ref[:2]) - inter
    assert inter / union > 0.5


def test_from_dir_reports_missing_files(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="FaceBoxesProd.pth"):
        FaceAnalyzer.from_dir(tmp_path)


def _rotation(yaw: float, pitch: float, roll: float) -> np.ndarray:
    x, y, z = np.radians([yaw, pitch, roll])
    rz = np.array([[np.cos(z), -np.sin(z), 0], [np.sin(z), np.cos(z), 0], [0, 0, 1]])
    ry = np.array([[np.cos(-x), 0, np.sin(-x)], [0, 1, 0], [-np.sin(-x), 0, np.cos(-x)]])
    rx = np.array([[1, 0, 0], [0, np.cos(y), -np.sin(y)], [0, np.sin(y), np.cos(y)]])
    return rz @ ry @ rx


def test_pose_from_params_recovers_angles_scale_translation() -> None:
    cam = np.concatenate([5e-4 * _rotation(20.0, -10.0, 5.0), [[57.0], [66.0], [-3.0]]], axis=1)
    pose = pose_from_params(np.concatenate([cam.ravel(), np.zeros(50)]))
    np.testing.assert_allclose(pose, [20.0, -10.0, 5.0, 5e-4, 57.0, 66.0], rtol=1e-6, atol=1e-9)


def _eye_landmarks() -> np.ndarray:
    """68 points where the left eye is 0.4 open and the right eye 0.2 (height / width)."""
    pts = np.zeros((68, 3))
    pts[42], pts[45] = (0, 0, 0), (10, 0, 0)  # left eye corners
    pts[43], pts[47] = (3, -2, 0), (3, 2, 0)
    pts[36], pts[39] = (20, 0, 0), (30, 0, 0)  # right eye corners
    pts[37], pts[41] = (23, -1, 0), (23, 1, 0)
    return pts


def test_eye_ratios_on_landmarks() -> None:
    np.testing.assert_allclose(eye_ratios(_eye_landmarks()), [0.4, 0.2])
    np.testing.assert_allclose(eye_ratios(_eye_landmarks()[:, :2]), [0.4, 0.2])
    with pytest.raises(ValueError, match="68 landmarks"):
        eye_ratios(np.zeros((5, 2)))


@pytest.mark.parametrize("suffix", [".npz", ".pkl"])
def test_bfm_sparse_landmark_path(tmp_path: Path, suffix: str) -> None:
    # a fake BFM whose 68 keypoints are the first 68 vertices, shaped like _eye_landmarks
    n_vert = 100
    u = np.zeros((n_vert, 3))
    u[:68] = _eye_landmarks()
    arrays = {
        "u": u.reshape(-1, 1),  # (x, y, z) interleaved, as in bfm_noneck_v3
        "w_shp": np.zeros((3 * n_vert, 199)),
        "w_exp": np.zeros((3 * n_vert, 29)),
        "keypoints": np.arange(204),
    }
    path = tmp_path / f"bfm{suffix}"
    if suffix == ".npz":
        np.savez(path, **arrays)
    else:
        path.write_bytes(pickle.dumps(arrays))
    bfm = load_bfm_keypoints(path)
    cam = np.concatenate([2.0 * _rotation(0, 0, 0), [[60.0], [60.0], [0.0]]], axis=1)
    param = np.concatenate([cam.ravel(), np.zeros(50)])
    roi = roi_box_from_bbox(np.array([100.0, 100.0, 220.0, 260.0]))
    lm = bfm_landmarks(param, bfm, roi)
    assert lm.shape == (68, 3) and lm[:, 2].min() == 0
    np.testing.assert_allclose(eye_ratios(lm), [0.4, 0.2], rtol=1e-6)


def test_roi_box_follows_3ddfa_rule() -> None:
    roi = roi_box_from_bbox(np.array([100.0, 50.0, 200.0, 250.0, 0.9]))
    side = int(150 * 1.58)
    np.testing.assert_allclose(
        roi, [150 - side / 2, 150 + 21 - side / 2, 150 + side / 2, 171 + side / 2]
    )


def test_square_crop_box_is_square_and_contains_face() -> None:
    face = np.array([300.0, 200.0, 420.0, 360.0])
    box = square_crop_box(face, (800, 1000))
    x0, y0, x1, y1 = box
    assert x1 - x0 == y1 - y0 == round(140 * CROP_MARGIN)
    assert x0 <= face[0] and y0 <= face[1] and face[2] <= x1 and face[3] <= y1
    near_edge = square_crop_box(np.array([0.0, 0.0, 100.0, 100.0]), (400, 400))
    assert near_edge[:2] == (0, 0)  # shifted inside instead of padded
    too_big = square_crop_box(np.array([0.0, 0.0, 100.0, 100.0]), (120, 120))
    assert too_big[2] - too_big[0] == 170  # larger than the image: stays centred, padded
    assert crop_and_resize(np.zeros((120, 120, 3), np.uint8), too_big, 32).shape == (32, 32, 3)
    with pytest.raises(ValueError, match="margin"):
        square_crop_box(face, (800, 1000), margin=0)


def test_paste_back_restores_original(media_dir: Path) -> None:
    img = load_portrait(media_dir / "portraits" / "real_female5.jpeg")
    box = (60, 40, 360, 340)
    exact = paste_back(img, crop_and_resize(img, box, 300), box)
    assert np.abs(exact.astype(int) - img.astype(int)).max() <= 1
    # through a 256 x 256 model-resolution frame: only resampling blur remains
    blurred = paste_back(img, crop_and_resize(img, box, 256), box, feather=8)
    err = np.abs(blurred.astype(float) - img.astype(float))
    assert err.mean() < 3.0
    outside = np.ones(img.shape[:2], bool)
    outside[40:340, 60:360] = False
    assert (blurred[outside] == img[outside]).all()
    padded_box = (-20, -20, 200, 200)
    back = paste_back(img, crop_and_resize(img, padded_box, 220, pad="black"), padded_box)
    assert np.abs(back.astype(int) - img.astype(int)).max() <= 1
