"""The evaluation protocol's preprocessing on inputs with known answers: ArcFace alignment, Bailando's
per-joint motion beats, syncnet_python's face tracks and crops, the MFCC input scale, S3FD."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from talkinghead.eval.audio_features import int16_scale, mfcc
from talkinghead.eval.face_align import (
    ARCFACE_TEMPLATE,
    align_face,
    five_points,
    similarity_transform,
)
from talkinghead.eval.face_track import build_tracks, crop_track, crop_window
from talkinghead.eval.metrics import motion_beats, motion_speed
from talkinghead.eval.s3fd import S3FD, detect_faces, load_s3fd, nms_s3fd, s3fd_priors


def test_similarity_transform_hand_computed() -> None:
    # Landmarks = template scaled by 2, rotated by +90 degrees, shifted by (10, 20):
    # p = A q + b with A = [[0, -2], [2, 0]]; the alignment must be the inverse,
    # M = [A^-1 | -A^-1 b] = [[0, 0.5, -10], [-0.5, 0, 5]].
    q = ARCFACE_TEMPLATE
    p = np.stack([-2 * q[:, 1] + 10, 2 * q[:, 0] + 20], axis=1)
    expected = np.array([[0.0, 0.5, -10.0], [-0.5, 0.0, 5.0]])
    np.testing.assert_allclose(similarity_transform(p, q), expected, atol=1e-12)
    # two points: (0,0)->(1,1), (2,0)->(1,3) is a quarter turn about the origin plus (1, 1)
    np.testing.assert_allclose(
        similarity_transform(np.array([[0.0, 0], [2, 0]]), np.array([[1.0, 1], [1, 3]])),
        [[0, -1, 1], [1, 0, 1]],
        atol=1e-12,
    )


def _umeyama(src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    """Independent reference: Umeyama's SVD solution with scaling (2, 3)."""
    sm, dm = src.mean(0), dst.mean(0)
    sc, dc = src - sm, dst - dm
    u, s, vt = np.linalg.svd(dc.T @ sc / len(src))
    d = np.array([1.0, np.sign(np.linalg.det(u @ vt))])
    rot = u @ np.diag(d) @ vt
    scale = (s * d).sum() / sc.var(0).sum()
    return np.hstack([scale * rot, (dm - scale * rot @ sm)[:, None]])


def test_similarity_transform_least_squares_matches_umeyama() -> None:
    rng = np.random.default_rng(0)
    src = rng.uniform(0, 200, (5, 2))
    dst = ARCFACE_TEMPLATE + rng.normal(0, 2.0, (5, 2))  # no exact solution: a fit
    np.testing.assert_allclose(similarity_transform(src, dst), _umeyama(src, dst), atol=1e-9)


def test_align_face_puts_landmarks_on_the_template() -> None:
    # Five dots on a rotated, scaled "face" land on the template points of the 112 x 112 crop.
    angle, scale, shift = np.deg2rad(30), 1.6, np.array([70.0, 40.0])
    rot = np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
    points = ARCFACE_TEMPLATE @ (scale * rot).T + shift
    image = np.zeros((300, 300, 3), np.uint8)
    for x, y in points:
        cv2.circle(image, (round(x), round(y)), 3, (255, 255, 255), -1)
    crop = align_face(image, points)
    assert crop.shape == (112, 112, 3) and crop.dtype == np.uint8
    for tx, ty in ARCFACE_TEMPLATE:
        x0, y0 = int(tx) - 5, int(ty) - 5
        patch = crop[y0 : y0 + 11, x0 : x0 + 11, 0].astype(float)
        ys, xs = np.mgrid[y0 : y0 + 11, x0 : x0 + 11]
        cx, cy = (patch * xs).sum() / patch.sum(), (patch * ys).sum() / patch.sum()
        # dots were drawn at rounded pixels: within a pixel of the template (scale 1 / 1.6)
        assert abs(cx - tx) < 1.0 and abs(cy - ty) < 1.0


def test_five_points_from_68() -> None:
    lm = np.zeros((68, 2))
    lm[36:42] = [10, 20]
    lm[42:48] = [30, 20]
    lm[30], lm[48], lm[54] = [20, 30], [12, 40], [28, 40]
    np.testing.assert_array_equal(
        five_points(lm), [[10, 20], [30, 20], [20, 30], [12, 40], [28, 40]]
    )


def test_bas_motion_beats_per_joint_on_non_rigid_motion() -> None:
    # Two joints move along different axes with speeds vA = 1 + cos(th) and vB = 1 - cos(th) / 2,
    # th = 2 pi t / 40. Bailando's mean per-joint speed (vA + vB) / 2 = 1 + cos(th) / 4 is
    # smallest at th = pi: frames 20, 60, 100, 140. The norm of the flattened step,
    # sqrt(vA^2 + vB^2), is smallest where cos(th) = -0.4 instead (two minima per period).
    steps = np.arange(160)
    c = np.cos(2 * np.pi * steps / 40)
    va, vb = 1 + c, 1 - c / 2
    joint_a = np.stack([np.r_[0, np.cumsum(va)], np.zeros(161)], axis=1)
    joint_b = np.stack([np.zeros(161), np.r_[0, np.cumsum(vb)]], axis=1)
    motion = np.stack([joint_a, joint_b], axis=1)  # (T, 2 joints, 2)
    np.testing.assert_allclose(motion_speed(motion), (va + vb) / 2, atol=1e-12)
    np.testing.assert_array_equal(motion_beats(motion), [20, 60, 100, 140])
    flattened = motion_beats(motion.reshape(len(motion), -1), sigma=1.0)
    assert not set(flattened) & {20, 60, 100, 140}  # the old definition finds other frames


def test_motion_speed_of_one_vector_per_frame_is_its_norm() -> None:
    pose = np.cumsum(np.ones((10, 6)), axis=0)
    np.testing.assert_allclose(motion_speed(pose), np.full(9, np.sqrt(6)))


def _coordinate_frame(h: int, w: int) -> np.ndarray:
    """R = x, G = y (so a crop shows where it came from), B = 0."""
    ys, xs = np.mgrid[0:h, 0:w]
    return np.stack([xs, ys, np.zeros_like(xs)], axis=-1).astype(np.uint8)


def test_crop_geometry_of_syncnet_python() -> None:
    # Box 80 wide, 100 high: half side s = 50 at centre (100, 100). syncnet_python takes rows
    # cy - s .. cy + 1.8 s = 50 .. 190 and columns cx - 1.4 s .. cx + 1.4 s = 30 .. 170.
    box = np.array([60.0, 50.0, 140.0, 150.0])
    pad, rows, cols = crop_window(100.0, 100.0, 50.0)
    assert pad == 90 and (rows[0] - pad, rows[1] - pad) == (50, 190)
    assert (cols[0] - pad, cols[1] - pad) == (30, 170)
    frames = np.repeat(_coordinate_frame(256, 256)[None], 15, axis=0)
    crops = crop_track(frames, np.tile(box, (15, 1)))
    assert crops.shape == (15, 224, 224, 3)
    corner = crops[7].astype(int)
    assert abs(corner[0, 0, 0] - 30) <= 1 and abs(corner[0, 0, 1] - 50) <= 1
    assert abs(corner[-1, -1, 0] - 169) <= 1 and abs(corner[-1, -1, 1] - 189) <= 1


def test_crop_pads_with_grey_110_outside_the_frame() -> None:
    # A face in the top-left corner: the window starts 8 px left of the frame (of 56 px).
    frames = np.zeros((13, 100, 100, 3), np.uint8) + 7
    crops = crop_track(frames, np.tile([0.0, 0.0, 40.0, 40.0], (13, 1)))
    assert (crops[6, :, :28] == 110).all() and (crops[6, :, 40:] == 7).all()


def test_crop_smoothing_is_a_13_frame_median() -> None:
    # One outlier box among steady ones is removed by the median filter.
    boxes = np.tile([60.0, 50.0, 140.0, 150.0], (20, 1))
    boxes[10] += 40
    frames = np.repeat(_coordinate_frame(256, 256)[None], 20, axis=0)
    crops = crop_track(frames, boxes)
    np.testing.assert_array_equal(crops[10], crops[9])


def test_build_tracks_like_track_shot() -> None:
    face = np.array([100.0, 100.0, 220.0, 240.0, 0.99])
    detections = [np.array([face + [t, 0, t, 0, 0]]) for t in range(130)]
    for t in range(40, 50):  # ten missed frames are bridged by interpolation
        detections[t] = np.zeros((0, 5))
    for t in range(5):  # a short spurious track elsewhere is dropped
        detections[t] = np.vstack([detections[t], [0, 0, 150, 150, 0.95]])
    tracks = build_tracks(detections)
    assert len(tracks) == 1
    track = tracks[0]
    np.testing.assert_array_equal(track.frames, np.arange(130))
    assert track.num_detections == 120
    np.testing.assert_allclose(track.boxes[45], face[:4] + [45, 0, 45, 0])
    # more than 25 missed frames end a track; a small face never makes one
    detections[60:90] = [np.zeros((0, 5))] * 30
    assert [len(t.frames) for t in build_tracks(detections, min_track=20)] == [60, 40]
    small = [np.array([[0, 0, 50, 50, 0.99]])] * 130
    assert build_tracks(small) == []


def test_mfcc_scale_comes_from_the_dtype() -> None:
    rng = np.random.default_rng(0)
    quiet = rng.integers(-2, 3, 16000).astype(np.int16)  # near-silent integer samples
    np.testing.assert_array_equal(int16_scale(quiet), quiet.astype(np.float64))
    # the same samples as full-scale floats give the same MFCC (no value-based guess)
    np.testing.assert_allclose(mfcc(quiet), mfcc(quiet.astype(np.float32) / 32768), atol=1e-9)
    assert int16_scale(np.array([1.0, -1.0, 0.5])).tolist() == [32767, -32768, 16384]
    with pytest.raises(ValueError, match="dtype"):
        int16_scale(np.array([True, False]))


def _s3fd_official_shapes() -> dict[str, tuple[int, ...]]:
    """Hand-written inventory of sfd_face.pth (syncnet_python detectors/s3fd/nets.py)."""
    vgg = {0: (64, 3), 2: (64, 64), 5: (128, 64), 7: (128, 128), 10: (256, 128), 12: (256, 256)}
    vgg |= {14: (256, 256), 17: (512, 256), 19: (512, 512), 21: (512, 512), 24: (512, 512)}
    vgg |= {26: (512, 512), 28: (512, 512)}
    shapes = {}
    for i, (cout, cin) in vgg.items():
        shapes[f"vgg.{i}.weight"], shapes[f"vgg.{i}.bias"] = (cout, cin, 3, 3), (cout,)
    shapes |= {"vgg.31.weight": (1024, 512, 3, 3), "vgg.31.bias": (1024,)}
    shapes |= {"vgg.33.weight": (1024, 1024, 1, 1), "vgg.33.bias": (1024,)}
    shapes |= {"L2Norm3_3.weight": (256,), "L2Norm4_3.weight": (512,), "L2Norm5_3.weight": (512,)}
    for i, (cout, cin, k) in enumerate(
        ((256, 1024, 1), (512, 256, 3), (128, 512, 1), (256, 128, 3))
    ):
        shapes[f"extras.{i}.weight"], shapes[f"extras.{i}.bias"] = (cout, cin, k, k), (cout,)
    for i, cin in enumerate((256, 512, 512, 1024, 512, 256)):
        shapes[f"loc.{i}.weight"], shapes[f"loc.{i}.bias"] = (4, cin, 3, 3), (4,)
        nconf = 4 if i == 0 else 2
        shapes[f"conf.{i}.weight"], shapes[f"conf.{i}.bias"] = (nconf, cin, 3, 3), (nconf,)
    return shapes


def test_s3fd_strict_load_of_official_layout_and_detection(tmp_path: Path) -> None:
    g = torch.Generator().manual_seed(0)
    sd = {k: torch.randn(s, generator=g) * 0.05 for k, s in _s3fd_official_shapes().items()}
    torch.save(sd, tmp_path / "sfd_face.pth")
    model = load_s3fd(tmp_path / "sfd_face.pth")
    assert set(model.state_dict()) == set(sd)
    image = np.random.default_rng(0).integers(0, 255, (256, 320, 3), dtype=np.uint8)
    dets = detect_faces(model, image, conf_threshold=0.0)
    assert dets.ndim == 2 and dets.shape[1] == 5 and len(dets) > 0
    assert (np.diff(dets[:, 4]) <= 0).all()  # best first
    assert detect_faces(model, image[:100, :100]).shape == (0, 5)  # 25 px at scale 0.25


def test_s3fd_priors_and_nms() -> None:
    loc, scores, sizes = S3FD()(torch.zeros(1, 3, 64, 80))
    priors = s3fd_priors(64, 80, sizes)
    assert len(priors) == loc.shape[1] == scores.shape[1] == sum(h * w for h, w in sizes)
    np.testing.assert_allclose(priors[0], [2 / 80, 2 / 64, 16 / 80, 16 / 64])
    np.testing.assert_allclose(priors[1], [6 / 80, 2 / 64, 16 / 80, 16 / 64])
    boxes = np.array([[0, 0, 10, 10], [0, 0, 10, 5], [5, 0, 15, 10.0]])
    scores_np = np.array([0.9, 0.8, 0.7])
    # IoUs with the first box: 0.5 and 1/3; a box is dropped only above the threshold
    assert nms_s3fd(boxes, scores_np, 0.5).tolist() == [0, 1, 2]
    assert nms_s3fd(boxes, scores_np, 0.4).tolist() == [0, 2]
