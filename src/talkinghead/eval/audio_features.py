"""Audio features for the sync and beat metrics: SyncNet MFCCs and speech onset "beats".

* ``mfcc``: the 13-coefficient MFCC of python_speech_features with its defaults (25 ms window,
  10 ms step, 26 mel filters, 512-point FFT, pre-emphasis 0.97, lifter 22, c0 replaced by the log
  frame energy), which is what syncnet_python feeds SyncNet (100 feature frames per second, on
  int16-scaled samples; ``int16_scale`` decides the scale from the dtype).
* ``audio_beats``: onset peaks of a spectral-flux envelope resampled to the video frame rate.
  Bailando's BAS takes music beats from librosa's beat tracker; speech has no tempo, so we use
  onset peaks (syllable attacks) instead -- an approximation documented in the report.
"""

from __future__ import annotations

import numpy as np
from scipy.fft import dct
from scipy.signal import find_peaks

SYNC_SAMPLE_RATE = 16000


def _hz_to_mel(hz: np.ndarray | float) -> np.ndarray:
    return 2595.0 * np.log10(1.0 + np.asarray(hz) / 700.0)


def _mel_to_hz(mel: np.ndarray) -> np.ndarray:
    return 700.0 * (10.0 ** (mel / 2595.0) - 1.0)


def _mel_filterbank(nfilt: int, nfft: int, sample_rate: int) -> np.ndarray:
    """(nfilt, nfft // 2 + 1) triangular filters on floor-rounded FFT bins."""
    mels = np.linspace(_hz_to_mel(0.0), _hz_to_mel(sample_rate / 2), nfilt + 2)
    bins = np.floor((nfft + 1) * _mel_to_hz(mels) / sample_rate).astype(int)
    bank = np.zeros((nfilt, nfft // 2 + 1))
    for j in range(nfilt):
        lo, mid, hi = bins[j], bins[j + 1], bins[j + 2]
        for i in range(lo, mid):
            bank[j, i] = (i - lo) / (mid - lo)
        for i in range(mid, hi):
            bank[j, i] = (hi - i) / (hi - mid)
    return bank


def _frames(signal: np.ndarray, frame_len: int, step: int) -> np.ndarray:
    n = len(signal)
    count = 1 if n <= frame_len else 1 + int(np.ceil((n - frame_len) / step))
    padded = np.concatenate([signal, np.zeros((count - 1) * step + frame_len - n)])
    idx = np.arange(frame_len)[None, :] + step * np.arange(count)[:, None]
    return padded[idx]  # -> (count, frame_len)


def int16_scale(audio: np.ndarray) -> np.ndarray:
    """Samples on the int16 scale that syncnet_python reads from its ``pcm_s16le`` wav files.

    The scale is decided by the dtype, never by the values (a near-silent integer signal must
    not be mistaken for a float one): integer samples are taken as they are; floating samples are
    full scale 1.0 and are rounded to int16 as ffmpeg writes ``pcm_s16le``
    (``clip(round(x * 32768), -32768, 32767)``).

    Args:
        audio: (S,) integer or floating samples.
    Returns:
        (S,) float64 on the int16 scale.
    """
    x = np.asarray(audio)
    if np.issubdtype(x.dtype, np.integer):
        return x.astype(np.float64)
    if not np.issubdtype(x.dtype, np.floating):
        raise ValueError(f"audio must hold integer or floating samples, got dtype {x.dtype}")
    return np.clip(np.round(x.astype(np.float64) * 32768.0), -32768.0, 32767.0)


def mfcc(audio: np.ndarray, sample_rate: int = SYNC_SAMPLE_RATE, numcep: int = 13) -> np.ndarray:
    """MFCC matrix (numcep, N) at 100 frames/s of a mono waveform.

    Args:
        audio: (S,) samples, scaled by ``int16_scale`` (MFCC log-energies depend on the scale).
    """
    if np.ndim(audio) != 1 or np.size(audio) == 0:
        raise ValueError(f"audio must be a non-empty 1-D waveform, got shape {np.shape(audio)}")
    x = int16_scale(audio)
    nfft, eps = 512, np.finfo(float).eps
    x = np.append(x[0], x[1:] - 0.97 * x[:-1])
    frames = _frames(x, round(0.025 * sample_rate), round(0.01 * sample_rate))
    power = np.abs(np.fft.rfft(frames, nfft)) ** 2 / nfft
    energy = power.sum(1)
    energy[energy == 0] = eps
    feat = power @ _mel_filterbank(26, nfft, sample_rate).T
    feat[feat == 0] = eps
    cep = dct(np.log(feat), type=2, axis=1, norm="ortho")[:, :numcep]
    cep *= 1 + 11.0 * np.sin(np.pi * np.arange(numcep) / 22.0)  # lifter L=22: 1 + L/2 sin(pi n/L)
    cep[:, 0] = np.log(energy)
    return cep.T


def onset_envelope(audio: np.ndarray, sample_rate: int, fps: float, num_frames: int) -> np.ndarray:
    """Spectral-flux onset strength (num_frames,) sampled at the video frame times."""
    x = np.asarray(audio, dtype=np.float64)
    hop, win = sample_rate // 100, 1024
    if len(x) < win:
        x = np.pad(x, (0, win - len(x)))
    frames = _frames(x, win, hop) * np.hanning(win)
    logmag = np.log1p(100.0 * np.abs(np.fft.rfft(frames, win)))
    flux = np.concatenate([[0.0], np.clip(np.diff(logmag, axis=0), 0, None).sum(1)])
    t_audio = np.arange(len(flux)) * hop / sample_rate
    t_video = np.arange(num_frames) / fps
    return np.interp(t_video, t_audio, flux)


def audio_beats(
    audio: np.ndarray, sample_rate: int, fps: float, num_frames: int, min_interval_s: float = 0.2
) -> np.ndarray:
    """Video frame indices of onset peaks (speech 'beats'), at least ``min_interval_s`` apart."""
    env = onset_envelope(audio, sample_rate, fps, num_frames)
    if env.max() <= 0:
        return np.zeros(0, dtype=np.int64)
    peaks, _ = find_peaks(
        env,
        distance=max(1, round(min_interval_s * fps)),
        height=env.mean() + 0.5 * env.std(),
    )
    return peaks.astype(np.int64)
