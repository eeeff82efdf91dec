"""Metric formulas on inputs with known answers (no networks)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from talkinghead.eval.audio_features import audio_beats, mfcc
from talkinghead.eval.metrics import (
    beat_align_score,
    blinks_per_second,
    count_blinks,
    frechet_distance,
    frechet_distance_features,
    gaussian_stats,
    lse_from_distances,
    motion_beats,
    psnr,
    ssim,
    sync_distances,
)


def test_frechet_closed_form_1d() -> None:
    # For 1-D Gaussians: (m1 - m2)^2 + (s1 - s2)^2.
    d = frechet_distance(np.array([1.0]), np.array([[4.0]]), np.array([-2.0]), np.array([[9.0]]))
    assert d == pytest.approx(9.0 + 1.0, abs=1e-10)


def test_frechet_closed_form_commuting_covariances() -> None:
    # S1 = Q diag(a) Q^T, S2 = Q diag(b) Q^T commute: tr = sum(a + b - 2 sqrt(ab)).
    rng = np.random.default_rng(0)
    q, _ = np.linalg.qr(rng.normal(size=(6, 6)))
    a, b = rng.uniform(0.1, 3, 6), rng.uniform(0.1, 3, 6)
    mu1, mu2 = rng.normal(size=6), rng.normal(size=6)
    expected = np.sum((mu1 - mu2) ** 2) + np.sum(a + b - 2 * np.sqrt(a * b))
    got = frechet_distance(mu1, q @ np.diag(a) @ q.T, mu2, q @ np.diag(b) @ q.T)
    assert got == pytest.approx(expected, rel=1e-9)


def test_frechet_general_matches_scipy_sqrtm() -> None:
    from scipy.linalg import sqrtm

    rng = np.random.default_rng(1)
    x, y = rng.normal(size=(8, 5)), rng.normal(size=(8, 5))
    s1, s2 = x.T @ x + np.eye(5), y.T @ y + 0.5 * np.eye(5)
    mu1, mu2 = rng.normal(size=5), rng.normal(size=5)
    ref = np.sum((mu1 - mu2) ** 2) + np.trace(s1 + s2 - 2 * sqrtm(s1 @ s2).real)
    assert frechet_distance(mu1, s1, mu2, s2) == pytest.approx(ref, rel=1e-8)


def test_low_rank_features_route_matches_stats_route() -> None:
    rng = np.random.default_rng(2)
    a, b = rng.normal(size=(10, 32)), rng.normal(loc=0.3, size=(12, 32))  # N < D: low-rank path
    expected = frechet_distance(*gaussian_stats(a), *gaussian_stats(b))
    assert frechet_distance_features(a, b) == pytest.approx(expected, rel=1e-6)
    assert abs(frechet_distance_features(a, a)) < 1e-9


def test_frechet_rejects_bad_shapes() -> None:
    with pytest.raises(ValueError):
        frechet_distance_features(np.zeros((1, 3)), np.zeros((4, 3)))


def test_psnr_and_ssim_known_values() -> None:
    x = torch.full((1, 3, 16, 16), 100.0)
    assert psnr(x, x + 10) == pytest.approx(10 * np.log10(255**2 / 100))
    img = torch.rand(2, 3, 24, 24, generator=torch.Generator().manual_seed(0)) * 255
    assert ssim(img, img) == pytest.approx(1.0)
    assert ssim(img, 255 - img) < 0.0


def test_bas_constructed_signals() -> None:
    # Motion beats exactly on audio beats -> 1; each 3 frames (= sigma) off -> exp(-1/2).
    beats = np.array([10, 40, 70])
    assert beat_align_score(beats, beats) == pytest.approx(1.0)
    assert beat_align_score(beats, beats + 3) == pytest.approx(np.exp(-0.5))
    assert beat_align_score(beats, np.array([10])) == pytest.approx((1 + 2 * np.exp(-900 / 18)) / 3)
    assert beat_align_score(beats, np.array([])) == 0.0


def test_motion_beats_are_speed_minima() -> None:
    # Position x(t) = sin(2 pi t / 40): speed minima at the turning points t = 10, 30, 50, 70.
    t = np.arange(80)
    found = motion_beats(np.sin(2 * np.pi * t / 40)[:, None], sigma=1.0)
    assert np.all(np.abs(found - np.array([10, 30, 50, 70])[:, None]).min(axis=0) <= 1)
    assert len(found) == 4


def test_blinks_on_constructed_signal() -> None:
    ear = np.full(250, 0.3)
    for start in (20, 80, 150, 200):  # four 3-frame closures
        ear[start : start + 3] = 0.1
    ear[81] = 0.3  # a flicker inside a closure still counts as one blink
    assert count_blinks(ear).tolist() == [20, 80, 150, 200]
    assert blinks_per_second(ear, fps=25) == pytest.approx(4 / 10)
    assert blinks_per_second(np.stack([ear, ear], 1), fps=25) == pytest.approx(0.4)
    assert len(count_blinks(np.full(50, 0.3) + 0.01 * np.sin(np.arange(50)))) == 0


def test_lse_offsets_and_confidence() -> None:
    # Audio features lag the video by 2 frames: best offset +2 (audio t+2 matches video t).
    g = torch.Generator().manual_seed(0)
    video = torch.randn(40, 8, generator=g)
    audio = torch.roll(video, shifts=2, dims=0)
    dists = sync_distances(video, audio, vshift=5)
    assert dists.shape == (40, 11)
    lse = lse_from_distances(dists, vshift=5)
    assert lse["offset"] == -2  # syncnet_python's sign: vshift - argmin
    assert dists.mean(0).argmin().item() == 5 + 2
    assert lse["lse_c"] > 0 and lse["lse_d"] < float(torch.median(dists.mean(0)))


def test_mfcc_rate_and_shape() -> None:
    audio = np.sin(2 * np.pi * 440 * np.arange(16000) / 16000) * 0.5
    feats = mfcc(audio)
    # 25 ms windows every 10 ms: 1 + ceil((16000 - 400) / 160) frames, about 100 per second.
    assert feats.shape == (13, 99)
    assert np.all(np.isfinite(feats))


def test_audio_beats_find_clicks() -> None:
    sr, fps = 16000, 25
    audio = np.zeros(sr * 2)
    rng = np.random.default_rng(0)
    for t in (0.4, 1.0, 1.6):
        audio[int(t * sr) : int(t * sr) + 400] = rng.normal(scale=0.5, size=400)
    beats = audio_beats(audio, sr, fps, num_frames=50)
    assert np.allclose(beats, [10, 25, 40], atol=1)
