"""Per-video-frame audio features: HuBERT (as DAWN) or a weight-free log-mel fallback.

DAWN spec §1.2 steps 4-6. HuBERT (``hubert-large-ls960-ft``, CTC head dropped) runs on the whole
16 kHz file normalised to zero mean / unit variance, in 20 s chunks whose frames are contiguous:
with receptive field 400 and hop 320, chunk ``i`` reads samples ``[320000 i, 320000 i + 320080)``
and yields exactly 1000 frames; a remainder of at least 400 samples is a last, shorter chunk.
The ``last_hidden_state`` sequence (50 Hz) is padded/truncated to ``(N - 80) // 320`` frames and
linearly interpolated to the video rate with endpoints aligned (``scipy.interpolate.interp1d``
evaluated at ``linspace(0, T - 1, num_frames)``).

``log_mel_features`` gives a feature of the same layout without any weights, for training on
one's own data when no HuBERT checkpoint is at hand.
"""

from __future__ import annotations

import logging
import math
import os
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch
from torch import Tensor

if TYPE_CHECKING:  # transformers takes seconds to import: only HuBERT users pay for it
    from transformers import HubertModel, Wav2Vec2FeatureExtractor

__all__ = [
    "HUBERT_CLIP",
    "HUBERT_HOP",
    "HUBERT_KERNEL",
    "HubertFeatureExtractor",
    "hubert_chunk_bounds",
    "hubert_num_frames",
    "interpolate_frames",
    "log_mel_features",
    "mel_filterbank",
]

logger = logging.getLogger(__name__)

HUBERT_KERNEL = 400  # samples; receptive field of HuBERT's conv feature encoder
HUBERT_HOP = 320  # samples; its total stride (50 Hz at 16 kHz)
HUBERT_CLIP = 320 * 1000  # samples per chunk (20 s at 16 kHz, 1000 HuBERT frames)
SAMPLE_RATE = 16000  # Hz


def hubert_num_frames(num_samples: int) -> int:
    """HuBERT frames the official code keeps for ``num_samples`` samples: ``(N - 80) // 320``."""
    return (num_samples - (HUBERT_KERNEL - HUBERT_HOP)) // HUBERT_HOP


def hubert_chunk_bounds(num_samples: int) -> list[tuple[int, int]]:
    """Sample ranges ``[start, end)`` HuBERT is run on (official chunking, spec §1.2 step 5).

    Full chunks overlap the next one by 80 samples (kernel - hop), so their frames are contiguous.
    """
    overlap = HUBERT_KERNEL - HUBERT_HOP
    num_full = num_samples // HUBERT_CLIP
    bounds = [
        (i * HUBERT_CLIP, min(i * HUBERT_CLIP + HUBERT_CLIP + overlap, num_samples))
        for i in range(num_full)
    ]
    start = num_full * HUBERT_CLIP
    if num_samples - start >= HUBERT_KERNEL:
        bounds.append((start, num_samples))
    return bounds


def interpolate_frames(features: Tensor, num_frames: int) -> Tensor:
    """Linear resampling along time with both endpoints kept (``interp1d`` semantics).

    Args:
        features: (T, D) sequence.
        num_frames: output length F >= 1.

    Returns:
        (F, D) in the dtype of ``features``; row ``j`` is ``features`` evaluated at
        ``j (T - 1) / (F - 1)``.
    """
    if features.ndim != 2 or features.shape[0] == 0:
        raise ValueError(f"features must be (T, D) with T >= 1, got {tuple(features.shape)}")
    if num_frames < 1:
        raise ValueError(f"num_frames={num_frames} must be >= 1")
    length = features.shape[0]
    if length == 1:
        return features.expand(num_frames, -1).clone()
    # Positions in float64 so that the last one is exactly T - 1 (like numpy's linspace).
    pos = torch.linspace(0, length - 1, num_frames, dtype=torch.float64)
    left = pos.floor().long().clamp(max=length - 2)
    weight = (pos - left).to(device=features.device, dtype=features.dtype)[:, None]
    left = left.to(features.device)
    return features[left] * (1 - weight) + features[left + 1] * weight


class HubertFeatureExtractor:
    """HuBERT ``last_hidden_state`` per video frame, exactly as DAWN prepares its audio condition.

    Args:
        model: a ``transformers.HubertModel`` (eval mode is set here).
        processor: its ``Wav2Vec2FeatureExtractor`` (normalises the whole file when
            ``do_normalize`` is set, as for ``hubert-large-ls960-ft``).
    """

    def __init__(self, model: HubertModel, processor: Wav2Vec2FeatureExtractor) -> None:
        if processor.sampling_rate != SAMPLE_RATE:
            raise ValueError(
                f"the HuBERT processor expects {processor.sampling_rate} Hz; only {SAMPLE_RATE} Hz "
                "models are supported"
            )
        self.model = model.eval()
        self.processor = processor

    @classmethod
    def from_pretrained(
        cls,
        path: str | os.PathLike[str],
        *,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> HubertFeatureExtractor:
        """Load model and processor from a LOCAL folder (never downloads).

        A folder without ``preprocessor_config.json`` gets the ``hubert-large-ls960-ft`` processor
        settings (16 kHz, ``do_normalize=True``).
        """
        path = Path(path)
        if not (path / "config.json").is_file():
            raise ValueError(f"{path} is not a HuBERT model folder (no config.json)")
        from transformers import HubertModel, Wav2Vec2FeatureExtractor

        model = HubertModel.from_pretrained(str(path), local_files_only=True)
        if (path / "preprocessor_config.json").is_file():
            processor = Wav2Vec2FeatureExtractor.from_pretrained(str(path), local_files_only=True)
        else:
            logger.info("%s has no preprocessor_config.json; using do_normalize=True", path)
            processor = Wav2Vec2FeatureExtractor(sampling_rate=SAMPLE_RATE, do_normalize=True)
        return cls(model, processor).to(device=device, dtype=dtype)

    def to(
        self, device: torch.device | str | None = None, dtype: torch.dtype | None = None
    ) -> HubertFeatureExtractor:
        """Move the model (in place) and return ``self``."""
        self.model.to(device=device, dtype=dtype)
        return self

    @property
    def hidden_size(self) -> int:
        return int(self.model.config.hidden_size)

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    @property
    def dtype(self) -> torch.dtype:
        return next(self.model.parameters()).dtype

    def normalize(self, audio_16k: np.ndarray) -> Tensor:
        """Processor output for the whole file: (N,) float32 on CPU."""
        values = self.processor(
            audio_16k, sampling_rate=SAMPLE_RATE, return_tensors="np"
        ).input_values
        return torch.from_numpy(np.asarray(values, dtype=np.float32)[0])

    @torch.inference_mode()
    def hidden_states(self, audio_16k: np.ndarray) -> Tensor:
        """HuBERT features at 50 Hz.

        Args:
            audio_16k: (N,) mono speech at 16 kHz, N >= 400.

        Returns:
            (T, hidden) float32 on the model's device, T = ``(N - 80) // 320``.
        """
        audio_16k = np.asarray(audio_16k)
        if audio_16k.ndim != 1:
            raise ValueError(f"audio_16k must be mono (N,), got shape {audio_16k.shape}")
        if audio_16k.shape[0] < HUBERT_KERNEL:
            raise ValueError(
                f"audio_16k has {audio_16k.shape[0]} samples; HuBERT needs >= {HUBERT_KERNEL}"
            )
        values = self.normalize(audio_16k)
        bounds = hubert_chunk_bounds(values.shape[0])
        parts = []
        for i, (start, end) in enumerate(bounds):
            chunk = values[start:end].to(device=self.device, dtype=self.dtype)[None]
            parts.append(self.model(chunk).last_hidden_state[0].float())
            logger.debug("HuBERT chunk %d/%d done", i + 1, len(bounds))
        hidden = torch.cat(parts)
        expected = hubert_num_frames(values.shape[0])
        # Conv arithmetic makes the chunked length (N - 400) // 320 + 1 = expected + 1 at most.
        assert abs(hidden.shape[0] - expected) <= 1, (hidden.shape[0], expected)
        if hidden.shape[0] < expected:
            hidden = torch.cat(
                [hidden, hidden.new_zeros(expected - hidden.shape[0], hidden.shape[1])]
            )
        return hidden[:expected]

    def __call__(self, audio_16k: np.ndarray, num_frames: int) -> Tensor:
        """HuBERT features resampled to the video rate.

        Args:
            audio_16k: (N,) mono speech at 16 kHz.
            num_frames: number of video frames F (``num_video_frames(N)`` for 25 fps).

        Returns:
            (F, hidden) float32 on the model's device.
        """
        return interpolate_frames(self.hidden_states(audio_16k), num_frames)


def mel_filterbank(
    n_mels: int, n_fft: int, sample_rate: int = SAMPLE_RATE, f_min: float = 0.0
) -> Tensor:
    """Triangular HTK-mel filters: (n_mels, n_fft // 2 + 1) float32, peak 1 each."""
    f_max = sample_rate / 2
    mel_min, mel_max = (2595.0 * math.log10(1 + f / 700.0) for f in (f_min, f_max))
    mel_points = torch.linspace(mel_min, mel_max, n_mels + 2, dtype=torch.float64)
    hz_points = 700.0 * (10 ** (mel_points / 2595.0) - 1)
    freqs = torch.linspace(0, f_max, n_fft // 2 + 1, dtype=torch.float64)
    lower, center, upper = hz_points[:-2, None], hz_points[1:-1, None], hz_points[2:, None]
    rising = (freqs - lower) / (center - lower)
    falling = (upper - freqs) / (upper - center)
    return torch.clamp(torch.minimum(rising, falling), min=0).float()


def log_mel_features(
    audio_16k: np.ndarray | Tensor,
    num_frames: int,
    n_mels: int = 80,
    *,
    n_fft: int = 400,
    hop_length: int = HUBERT_HOP,
    normalize: bool = True,
) -> Tensor:
    """Weight-free log-mel features per video frame (a HuBERT stand-in with the same layout).

    25 ms Hann windows every 20 ms (HuBERT's 50 Hz), HTK mel filters, natural log, optional
    per-band zero-mean/unit-variance over the file, then the same endpoint-aligned linear
    interpolation to ``num_frames`` as the HuBERT path.

    Args:
        audio_16k: (N,) mono speech at 16 kHz, N >= ``n_fft``.
        num_frames: number of video frames F.
        n_mels: feature size D.

    Returns:
        (F, n_mels) float32 on the device of ``audio_16k`` (CPU for numpy input).
    """
    audio = torch.as_tensor(
        np.asarray(audio_16k) if not isinstance(audio_16k, Tensor) else audio_16k
    )
    if audio.ndim != 1:
        raise ValueError(f"audio_16k must be mono (N,), got shape {tuple(audio.shape)}")
    if audio.shape[0] < n_fft:
        raise ValueError(f"audio_16k has {audio.shape[0]} samples; log-mel needs >= {n_fft}")
    if n_mels < 1:
        raise ValueError(f"n_mels={n_mels} must be >= 1")
    audio = audio.float()
    window = torch.hann_window(n_fft, device=audio.device)
    spec = torch.stft(audio, n_fft, hop_length, window=window, center=True, return_complex=True)
    power = spec.abs() ** 2  # -> (n_fft // 2 + 1, T)
    mel = mel_filterbank(n_mels, n_fft).to(audio.device) @ power  # -> (n_mels, T)
    feats = torch.log(mel.clamp_min(1e-10)).T  # -> (T, n_mels)
    if normalize:
        feats = (feats - feats.mean(0)) / (feats.std(0, unbiased=False) + 1e-5)
    return interpolate_frames(feats, num_frames)
