"""DiffTalk's audio input: per frame, 8 neighbouring windows of 16 feature steps (spec §2.2).

The official model reads AD-NeRF DeepSpeech windows: 29 logits at 50 Hz (2 per 25-fps frame),
zero-padded by 8 steps at each end and cut into windows of 16 with stride 2, one ``(16, 29)``
window per frame, centred on it. Frame i is then conditioned on the windows of frames
``[i - 4, i + 4)``, zero-padded past the clip ends as AD-NeRF's ``get_audio_features`` does (the
official preprocessing is not public; [unverified] which of the AD-NeRF-style variants DiffTalk
used, see spec §2.2).

``frame_windows`` / ``smooth_windows`` apply that to any 50-Hz feature, so the toolkit's own
features (log-mel, HuBERT) go through the same AudioNet / AudioAttNet shapes:
``(F, 8, 16, C)`` with C = 29 (DeepSpeech), 80 (log-mel) or 1024 (HuBERT).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from talkinghead.media.audio_features import log_mel_features

WINDOW = 16  # feature steps per frame window (0.32 s at 50 Hz)
STRIDE = 2  # feature steps per video frame (50 Hz features, 25 fps video)
SMOOTH = 8  # frame windows per condition


def frame_windows(features: Tensor, num_frames: int, window: int = WINDOW) -> Tensor:
    """(T, C) features at 2 x fps -> (num_frames, window, C), window i centred on frame i.

    Features shorter than ``2 * num_frames`` are zero-padded at the end, longer ones truncated.
    """
    if features.ndim != 2:
        raise ValueError(f"features must be (T, C), got shape {tuple(features.shape)}")
    need = STRIDE * num_frames
    features = features[:need]
    tail = need - features.shape[0]
    half = window // 2
    padded = torch.nn.functional.pad(features, (0, 0, half, half + tail))  # -> (2F + window, C)
    return padded.unfold(0, window, STRIDE)[:num_frames].transpose(1, 2).contiguous()


def smooth_windows(windows: Tensor, size: int = SMOOTH) -> Tensor:
    """(F, window, C) -> (F, size, window, C): frame i gets the windows of frames [i - size/2, i + size/2),
    zero outside the clip (AD-NeRF ``get_audio_features``)."""
    if windows.ndim != 3:
        raise ValueError(f"windows must be (F, window, C), got shape {tuple(windows.shape)}")
    half = size // 2
    padded = torch.nn.functional.pad(windows, (0, 0, 0, 0, half, size - half))
    index = torch.arange(windows.shape[0])[:, None] + torch.arange(size)[None]  # -> (F, size)
    return padded[index]


def load_feature_file(path: str | Path, channels: int = 29) -> Tensor:
    """A ``.npy`` of DeepSpeech windows: (N, 16, C) per frame, or (N, 8, 16, C) already smoothed.

    Returns:
        (N, 8, 16, C) float32.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"audio feature file {path} does not exist.")
    array = np.load(path, allow_pickle=False)
    if array.ndim == 3 and array.shape[1:] == (WINDOW, channels):
        return smooth_windows(torch.from_numpy(array.astype(np.float32)))
    if array.ndim == 4 and array.shape[1:] == (SMOOTH, WINDOW, channels):
        return torch.from_numpy(array.astype(np.float32))
    raise ValueError(
        f"{path} holds an array of shape {array.shape}; DiffTalk needs DeepSpeech windows "
        f"(N, {WINDOW}, {channels}) or (N, {SMOOTH}, {WINDOW}, {channels})."
    )


def logmel_condition(audio_16k: np.ndarray, num_frames: int, n_mels: int = 80) -> Tensor:
    """The toolkit's default DiffTalk audio input: log-mel at 50 Hz -> (F, 8, 16, n_mels)."""
    mel = log_mel_features(audio_16k, STRIDE * num_frames, n_mels=n_mels)  # -> (2F, n_mels)
    return smooth_windows(frame_windows(mel, num_frames))
