"""SDA-style audio encoder of Diffused Heads: raw 16 kHz windows -> one 256-d embedding per video frame.

Architecture of speech-driven-animation (Vougioukas et al. 2019, ``sda/encoder_audio.py`` +
``sda/rnn_audio.py``), rebuilt from its public description (diffusedheads_spec.md §1.2):

* frame encoder, per 0.2 s window (3200 samples): a first Conv1d with a 5 ms kernel and 1 ms stride
  (80 / 16 samples), then one Conv1d per prime factor p of the remaining length (kernel 2p, stride p,
  "same"-style padding), each followed by BatchNorm + ReLU, channels 16 -> 32 -> 64 -> ...; the last
  prime factor is folded into a final Conv1d over the whole remaining length to ``code_size`` + tanh.
  For 3200 samples: strides 16, 2, 2, 2, 5 then a kernel-5 conv: 200 -> 100 -> 50 -> 25 -> 5 -> 1.
* a 2-layer GRU (hidden 256) over the sequence of window codes. The official wrapper feeds one window
  at a time and carries the hidden state; running the GRU over all windows at once is the same
  computation, so ``forward`` takes a whole clip.

Windowing (``frame_windows``): the waveform is zero-padded by (window − stride)/2 = 1280 samples on
each side and cut every 640 samples, giving ``N // 640`` windows = one per 25 fps frame.

Parameter names follow SDA (``encoder.cl.{i}``, ``encoder.activations.{i}.0`` for the BatchNorms,
``rnn.weight_ih_l0`` ...). The released ``audio_encoder.pt`` could not be inspected here, so its internal
names and the code size (256 assumed) are **unverified**; the converter maps names and fails loudly.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from talkinghead.diffused_heads.configs import AudioEncoderConfig


def prime_factors(n: int) -> list[int]:
    """Prime factors of n in increasing order, with multiplicity."""
    factors, p = [], 2
    while p * p <= n:
        if n % p:
            p += 1
        else:
            n //= p
            factors.append(p)
    if n > 1:
        factors.append(n)
    return factors


def _same_padding(length: int, kernel: int, stride: int) -> int:
    """Total padding for ceil(length / stride) outputs."""
    return (math.ceil(length / stride) - 1) * stride + kernel - length


def conv_plan(cfg: AudioEncoderConfig) -> tuple[list[tuple[int, int, int]], int]:
    """(kernel, stride, padding per side) of every strided conv, and the length left for the final conv."""
    length = round(cfg.window_s * cfg.sample_rate)
    kernel0, stride0 = (
        round(cfg.init_kernel_s * cfg.sample_rate),
        round(cfg.init_stride_s * cfg.sample_rate),
    )
    total = _same_padding(length, kernel0, stride0)
    after_first = (length + total - kernel0) // stride0 + 1
    strides = [stride0, *prime_factors(after_first)]
    kernels = [kernel0, *(2 * s for s in strides[1:])]
    plan = []
    for kernel, stride in zip(kernels[:-1], strides[:-1], strict=True):
        total = _same_padding(length, kernel, stride)
        plan.append((kernel, stride, math.ceil(total / 2)))
        length = (length + total - kernel) // stride + 1
    return plan, length


def frame_windows(audio: Tensor, window: int, stride: int) -> Tensor:
    """(..., N) waveform -> (..., N // stride, window) windows centred on the video frames (a view).

    The waveform is zero-padded by (window − stride)/2 samples on each side, as the official wrapper.
    """
    pad = window - stride
    return F.pad(audio, (pad // 2, pad - pad // 2)).unfold(-1, window, stride)


class SDAFrameEncoder(nn.Module):
    """(N, 1, window) waveform windows -> (N, code_size) codes in [-1, 1]."""

    def __init__(self, cfg: AudioEncoderConfig) -> None:
        super().__init__()
        plan, final_length = conv_plan(cfg)
        self.cl = nn.ModuleList()
        self.activations = nn.ModuleList()
        channels, out = 1, cfg.num_feature_maps
        for kernel, stride, pad in plan:
            self.cl.append(nn.Conv1d(channels, out, kernel, stride=stride, padding=pad))
            self.activations.append(nn.Sequential(nn.BatchNorm1d(out), nn.ReLU()))
            channels, out = out, 2 * out
        self.cl.append(nn.Conv1d(channels, cfg.code_size, final_length))
        self.activations.append(nn.Tanh())

    def forward(self, x: Tensor) -> Tensor:
        for conv, act in zip(self.cl, self.activations, strict=True):
            x = act(conv(x))
        return x[..., 0]


class SDAAudioEncoder(nn.Module):
    """Waveform windows of one or more clips -> per-frame audio embeddings (the UNet's audio condition)."""

    # scriptable (tests script it like the official file); the properties are Python-only
    __jit_unused_properties__ = ("window", "stride")

    def __init__(self, cfg: AudioEncoderConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.encoder = SDAFrameEncoder(cfg)
        self.rnn = nn.GRU(cfg.code_size, cfg.hidden_size, cfg.num_layers, batch_first=True)

    @property
    def window(self) -> int:
        return round(self.cfg.window_s * self.cfg.sample_rate)

    @property
    def stride(self) -> int:
        return round(self.cfg.stride_s * self.cfg.sample_rate)

    def frame_windows(self, audio: Tensor) -> Tensor:
        """(B, N) waveform -> (B, N // stride, window) overlapping windows, one per video frame."""
        return frame_windows(audio, self.window, self.stride)

    def forward(self, windows: Tensor, state: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """Encode windows and run the GRU over them.

        Args:
            windows: (B, W, window) waveform windows in [-1, 1].
            state: (num_layers, B, hidden) GRU state to continue from (None: zeros, a new clip).
        Returns:
            (embeddings (B, W, hidden), final state (num_layers, B, hidden)).
        """
        b, w, n = windows.shape
        codes = self.encoder(windows.reshape(b * w, 1, n)).reshape(b, w, -1)
        return self.rnn(codes, state)

    def embed_windows(self, windows: Tensor, lengths: Tensor) -> Tensor:
        """Embeddings of B clips of different lengths at once (training), state reset per clip.

        Args:
            windows: (B, L, window) waveform windows, clip b's first ``lengths[b]`` rows valid.
            lengths: (B,) int64 valid windows per clip.
        Returns:
            (B, L, hidden); row i of clip b depends on its windows 0..i only (the GRU is causal),
            rows past ``lengths[b]`` are meaningless. Padding never enters BatchNorm statistics.
        """
        b, n = windows.shape[0], windows.shape[1]
        valid = torch.arange(n, device=windows.device)[None, :] < lengths[:, None]  # -> (B, L)
        codes = self.encoder(windows[valid][:, None])  # -> (sum of lengths, code_size)
        padded = codes.new_zeros(b, n, codes.shape[-1])
        padded[valid] = codes
        return self.rnn(padded)[0]

    def embed_audio(self, audio: Tensor) -> Tensor:
        """(B, N) 16 kHz waveform -> (B, N // 640, hidden) embeddings, state reset per clip."""
        return self(self.frame_windows(audio))[0]
