"""Pure metric functions behind DAWN's Table 1 (arXiv 2410.13726, Sec. 4.1 "Metrics").

Everything here works on arrays/tensors that the networks (``inception``, ``i3d``, ``syncnet``,
``arcface``) or the signal extractors already produced, so each formula can be tested on inputs with
known answers:

* FID / FVD: Fréchet distance between Gaussians fitted to features (Heusel et al. 2017),
  ``d = |mu1 - mu2|^2 + tr(S1 + S2 - 2 (S1 S2)^(1/2))``.
* LSE-D / LSE-C: SyncNet distances over +-vshift frame offsets (joonson/syncnet_python,
  as used by Wav2Lip's evaluation): min of the frame-averaged distance curve, and median - min.
* CSIM: cosine similarity of ArcFace embeddings.
* BAS: Bailando's beat-align score, mean over audio beats of exp(-min_dist^2 / (2 sigma^2)), sigma=3;
  motion beats are minima of the smoothed mean per-joint speed.
* Blink/s: dips of an eye-openness (eye-aspect-ratio) signal per second.
* PSNR / SSIM (Wang et al. 2004, 11x11 Gaussian window, sigma 1.5).
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from scipy.ndimage import correlate1d, gaussian_filter1d
from scipy.signal import argrelextrema
from torch import Tensor


def gaussian_stats(features: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean (D,) and unbiased covariance (D, D) of ``features``: (N, D), N >= 2."""
    feats = np.asarray(features, dtype=np.float64)
    if feats.ndim != 2 or feats.shape[0] < 2:
        raise ValueError(f"features must be (N, D) with N >= 2, got shape {feats.shape}")
    return feats.mean(axis=0), np.cov(feats, rowvar=False)


def _trace_sqrt_product(sigma1: np.ndarray, sigma2: np.ndarray) -> float:
    # tr((S1 S2)^(1/2)) = sum sqrt(eig(S1^(1/2) S2 S1^(1/2))); the symmetric form keeps the
    # eigenvalues real and non-negative, unlike scipy.linalg.sqrtm on the non-symmetric S1 S2.
    w, v = np.linalg.eigh(sigma1)
    root1 = (v * np.sqrt(np.clip(w, 0.0, None))) @ v.T
    inner = root1 @ sigma2 @ root1
    eig = np.linalg.eigvalsh((inner + inner.T) / 2)
    return float(np.sqrt(np.clip(eig, 0.0, None)).sum())


def frechet_distance(
    mu1: np.ndarray, sigma1: np.ndarray, mu2: np.ndarray, sigma2: np.ndarray
) -> float:
    """Fréchet distance between N(mu1, sigma1) and N(mu2, sigma2).

    Args:
        mu1, mu2: (D,) means.  sigma1, sigma2: (D, D) covariances.
    """
    mu1, mu2 = np.atleast_1d(mu1).astype(np.float64), np.atleast_1d(mu2).astype(np.float64)
    sigma1 = np.atleast_2d(sigma1).astype(np.float64)
    sigma2 = np.atleast_2d(sigma2).astype(np.float64)
    if mu1.shape != mu2.shape or sigma1.shape != sigma2.shape or sigma1.shape != mu1.shape * 2:
        raise ValueError(
            f"shape mismatch: mu {mu1.shape} vs {mu2.shape}, sigma {sigma1.shape} vs {sigma2.shape}"
        )
    diff = mu1 - mu2
    covmean = _trace_sqrt_product(sigma1, sigma2)
    return float(diff @ diff + np.trace(sigma1) + np.trace(sigma2) - 2.0 * covmean)


def frechet_distance_features(feats1: np.ndarray, feats2: np.ndarray) -> float:
    """Fréchet distance between Gaussians fitted to two feature sets (N1, D) and (N2, D).

    With fewer samples than dimensions (small evaluation sets, 2048-d Inception features) the
    covariances have rank < D; then tr((S1 S2)^(1/2)) equals the nuclear norm of
    A1 A2^T / sqrt((N1-1)(N2-1)) for the centred features A, which is exact and cheap.
    """
    a = np.asarray(feats1, dtype=np.float64)
    b = np.asarray(feats2, dtype=np.float64)
    if a.ndim != 2 or b.ndim != 2 or a.shape[1] != b.shape[1] or min(len(a), len(b)) < 2:
        raise ValueError(f"need (N, D) feature sets with N >= 2, got {a.shape} and {b.shape}")
    if max(len(a), len(b)) >= a.shape[1]:
        return frechet_distance(*gaussian_stats(a), *gaussian_stats(b))
    ca, cb = a - a.mean(0), b - b.mean(0)
    na, nb = len(a) - 1, len(b) - 1
    diff = a.mean(0) - b.mean(0)
    cross = np.linalg.svd(ca @ cb.T, compute_uv=False).sum() / np.sqrt(na * nb)
    return float(diff @ diff + (ca * ca).sum() / na + (cb * cb).sum() / nb - 2.0 * cross)


def psnr(x: Tensor, y: Tensor, data_range: float = 255.0) -> float:
    """Peak signal-to-noise ratio in dB of two images/videos of equal shape."""
    if x.shape != y.shape:
        raise ValueError(f"psnr needs equal shapes, got {tuple(x.shape)} and {tuple(y.shape)}")
    mse = F.mse_loss(x.double(), y.double()).item()
    return float("inf") if mse == 0 else float(10.0 * np.log10(data_range**2 / mse))


def ssim(
    x: Tensor, y: Tensor, data_range: float = 255.0, window: int = 11, sigma: float = 1.5
) -> float:
    """Mean SSIM of image batches ``x, y``: (N, C, H, W), Gaussian window, per channel."""
    if x.shape != y.shape or x.ndim != 4:
        raise ValueError(
            f"ssim needs equal (N, C, H, W) shapes, got {tuple(x.shape)}, {tuple(y.shape)}"
        )
    coords = np.arange(window, dtype=np.float64) - (window - 1) / 2
    g = np.exp(-(coords**2) / (2 * sigma**2))
    g = g / g.sum()
    r = window // 2

    def blur(t: np.ndarray) -> np.ndarray:
        # separable Gaussian, 'valid' part only as in Wang et al.: (N, C, H, W) ->
        # (N, C, H - window + 1, W - window + 1); scipy's float64 loops are far faster than
        # torch's grouped float64 conv2d on CPU
        out = correlate1d(correlate1d(t, g, axis=-1, mode="constant"), g, axis=-2, mode="constant")
        return out[..., r : out.shape[-2] - r, r : out.shape[-1] - r]

    x, y = x.double().cpu().numpy(), y.double().cpu().numpy()
    mu_x, mu_y = blur(x), blur(y)
    var_x = blur(x * x) - mu_x**2
    var_y = blur(y * y) - mu_y**2
    cov = blur(x * y) - mu_x * mu_y
    c1, c2 = (0.01 * data_range) ** 2, (0.03 * data_range) ** 2
    num = (2 * mu_x * mu_y + c1) * (2 * cov + c2)
    den = (mu_x**2 + mu_y**2 + c1) * (var_x + var_y + c2)
    return float((num / den).mean())


def cosine_similarity(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Row-wise cosine similarity of (N, D) and (N, D) or (1, D) embeddings -> (N,)."""
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    a = a / np.linalg.norm(a, axis=-1, keepdims=True).clip(1e-12)
    b = b / np.linalg.norm(b, axis=-1, keepdims=True).clip(1e-12)
    return (a * b).sum(-1)


def sync_distances(video_feats: Tensor, audio_feats: Tensor, vshift: int = 15) -> Tensor:
    """SyncNet distance of every frame to audio shifted by -vshift..+vshift frames.

    Args:
        video_feats, audio_feats: (T, D) per-frame SyncNet embeddings.
    Returns:
        (T, 2*vshift+1) Euclidean distances; column k compares video t with audio t + k - vshift
        (zero-padded audio outside the clip, as in syncnet_python's calc_pdist).
    """
    if video_feats.shape != audio_feats.shape:
        raise ValueError(
            f"feature shapes differ: {tuple(video_feats.shape)} vs {tuple(audio_feats.shape)}"
        )
    win = 2 * vshift + 1
    padded = F.pad(audio_feats, (0, 0, vshift, vshift))  # -> (T + 2 vshift, D)
    windows = padded.unfold(0, win, 1).transpose(1, 2)  # -> (T, win, D)
    return F.pairwise_distance(video_feats[:, None, :].expand_as(windows), windows)


def lse_from_distances(dists: Tensor, vshift: int = 15) -> dict[str, float]:
    """LSE-D (min mean distance), LSE-C (median - min) and the AV offset from ``sync_distances``."""
    mdist = dists.mean(0)  # -> (2 vshift + 1,)
    minval, minidx = torch.min(mdist, 0)
    return {
        "lse_d": float(minval),
        "lse_c": float(torch.median(mdist) - minval),
        "offset": int(vshift - int(minidx)),
    }


def motion_speed(motion: np.ndarray) -> np.ndarray:
    """Per-step speed (T - 1,) of a motion, as Bailando's ``calc_db`` measures it.

    Args:
        motion: (T, J, C) positions of J joints (e.g. landmarks): the mean over joints of each
            joint's speed ``|x_j(t+1) - x_j(t)|``; or (T, D) / (T,) one pose vector per frame
            (a single "joint": the norm of its change).
    """
    m = np.asarray(motion, dtype=np.float64)
    if m.ndim == 1:
        m = m[:, None]
    if m.ndim == 2:
        m = m[:, None, :]
    if m.ndim != 3:
        raise ValueError(f"motion must be (T,), (T, D) or (T, J, C), got shape {m.shape}")
    return np.linalg.norm(np.diff(m, axis=0), axis=2).mean(axis=1)


def motion_beats(motion: np.ndarray, sigma: float = 5.0) -> np.ndarray:
    """Frames where the smoothed motion speed has a local minimum (Bailando's kinematic beats).

    Args:
        motion: see ``motion_speed``; several joints are averaged joint by joint (Bailando),
            never through the norm of the flattened vector.
        sigma: Gaussian smoothing of the speed in frames (Bailando: 5).
    """
    if len(np.asarray(motion)) < 3:
        return np.zeros(0, dtype=np.int64)
    speed = gaussian_filter1d(motion_speed(motion), sigma)
    return argrelextrema(speed, np.less)[0]


def beat_align_score(
    audio_beats: np.ndarray, motion_beat_frames: np.ndarray, sigma: float = 3.0
) -> float:
    """Bailando BAS: mean over audio beats b of exp(-min_m (m - b)^2 / (2 sigma^2)), frames units.

    Returns 0 when there are no motion beats and nan when there are no audio beats.
    """
    audio_beats = np.asarray(audio_beats, dtype=np.float64)
    mb = np.asarray(motion_beat_frames, dtype=np.float64)
    if audio_beats.size == 0:
        return float("nan")
    if mb.size == 0:
        return 0.0
    nearest = np.min((mb[None, :] - audio_beats[:, None]) ** 2, axis=1)
    return float(np.mean(np.exp(-nearest / (2 * sigma**2))))


def count_blinks(
    openness: np.ndarray, rel_drop: float = 0.25, min_gap: int = 3, smooth: float = 0.0
) -> np.ndarray:
    """Start frames of blinks: dips of an eye-openness signal below (1 - rel_drop) x its median.

    Args:
        openness: (T,) eye aspect ratio (or (T, 2) left/right, averaged).
        rel_drop: relative drop below the median baseline that counts as a closed eye.
        min_gap: dips separated by fewer open frames are merged (one blink, jittery signal).
        smooth: optional Gaussian smoothing sigma in frames.
    """
    s = np.asarray(openness, dtype=np.float64)
    s = s.mean(axis=1) if s.ndim == 2 else s
    if s.ndim != 1:
        raise ValueError(f"openness must be (T,) or (T, 2), got {np.shape(openness)}")
    if s.size == 0:
        return np.zeros(0, dtype=np.int64)
    if smooth > 0:
        s = gaussian_filter1d(s, smooth)
    closed = s < (1.0 - rel_drop) * np.median(s)
    starts = np.flatnonzero(closed & ~np.concatenate([[False], closed[:-1]]))
    ends = np.flatnonzero(closed & ~np.concatenate([closed[1:], [False]]))
    kept: list[int] = []
    last_end = -(10**9)
    for start, end in zip(starts, ends):
        if start - last_end - 1 >= min_gap or not kept:
            kept.append(int(start))
        last_end = int(end)
    return np.asarray(kept, dtype=np.int64)


def blinks_per_second(openness: np.ndarray, fps: float, **kwargs: float) -> float:
    """Number of ``count_blinks`` dips divided by the clip duration in seconds."""
    n = len(np.asarray(openness))
    if n == 0 or fps <= 0:
        raise ValueError(f"need a non-empty signal and fps > 0, got {n} frames at fps={fps}")
    return float(len(count_blinks(openness, **kwargs)) / (n / fps))
