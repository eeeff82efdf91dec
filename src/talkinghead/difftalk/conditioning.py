"""DiffTalk's condition encoders: audio windows and upper-face landmarks -> one context token.

Our own modules (diffusers has nothing like them); parameter names follow the official
``ldm/modules/encoders/modules.py`` so a checkpoint needs only its prefix changed (spec §2.3,
MANIFEST quirks 9-11):

* ``AudioEncoder`` = official ``AudioNet``: one (16, 29) window -> (64,) code.
* ``AudioSmoother`` = official ``AudioAttNet``: softmax weights over 8 neighbouring windows, computed
  from the first 32 of each window's 64 features, applied to the full 64-d codes.
* ``LandmarkEncoder`` = official ``LdmNet``: 39 (x, y) points in 256-px units -> (64,) code.
* ``ConditionEncoder``: all three; ``forward`` returns the UNet context (B, 1, 128) =
  [audio code | landmark code].
"""

from __future__ import annotations

import torch
from einops import rearrange
from torch import Tensor, nn

from talkinghead.difftalk.configs import DiffTalkConditionConfig


class AudioEncoder(nn.Module):
    """AudioNet: strided 1-D convolutions over time, then two linear layers.

    forward: windows (N, window, channels) -> codes (N, audio_dim).
    """

    def __init__(self, cfg: DiffTalkConditionConfig):
        super().__init__()
        if cfg.audio_window != 2 ** len(cfg.audio_conv_channels):
            raise ValueError(
                f"audio_window={cfg.audio_window} must be 2**(number of audio convs)="
                f"{2 ** len(cfg.audio_conv_channels)}"
            )
        layers: list[nn.Module] = []
        channels = cfg.audio_channels
        for out in cfg.audio_conv_channels:
            layers += [
                nn.Conv1d(channels, out, 3, stride=2, padding=1),
                nn.LeakyReLU(cfg.leaky_slope),
            ]
            channels = out
        self.encoder_conv = nn.Sequential(*layers)
        self.encoder_fc1 = nn.Sequential(
            nn.Linear(channels, cfg.audio_dim),
            nn.LeakyReLU(cfg.leaky_slope),
            nn.Linear(cfg.audio_dim, cfg.audio_dim),
        )

    def forward(self, windows: Tensor) -> Tensor:
        x = rearrange(windows, "n t c -> n c t")
        x = self.encoder_conv(x)[..., 0]  # time 16 -> 1: (N, C)
        return self.encoder_fc1(x)


class AudioSmoother(nn.Module):
    """AudioAttNet: attention over the ``smooth_frames`` window codes of one frame.

    forward: codes (B, smooth_frames, audio_dim) -> (smoothed (B, audio_dim), weights (B, 1, S)).
    """

    def __init__(self, cfg: DiffTalkConditionConfig):
        super().__init__()
        layers: list[nn.Module] = []
        channels = cfg.attention_features
        while channels > 1:  # 32 -> 16 -> 8 -> 4 -> 2 -> 1, a LeakyReLU after each (also the last)
            layers += [
                nn.Conv1d(channels, channels // 2, 3, padding=1),
                nn.LeakyReLU(cfg.leaky_slope),
            ]
            channels //= 2
        if channels != 1:
            raise ValueError(f"attention_features={cfg.attention_features} must be a power of 2")
        self.attention_features = cfg.attention_features
        self.attentionConvNet = nn.Sequential(*layers)
        self.attentionNet = nn.Sequential(
            nn.Linear(cfg.smooth_frames, cfg.smooth_frames), nn.Softmax(dim=2)
        )

    def forward(self, codes: Tensor) -> tuple[Tensor, Tensor]:
        y = rearrange(codes[..., : self.attention_features], "b s c -> b c s")
        weights = self.attentionNet(self.attentionConvNet(y))  # -> (B, 1, S), sums to 1 over S
        return torch.matmul(weights, codes)[:, 0], weights


class LandmarkEncoder(nn.Module):
    """LdmNet: flattened (x0, y0, x1, y1, ...) points -> MLP. forward: (B, L, 2) -> (B, landmark_dim)."""

    def __init__(self, cfg: DiffTalkConditionConfig):
        super().__init__()
        slope = cfg.leaky_slope
        self.encoder_fc1 = nn.Sequential(
            nn.Linear(2 * cfg.num_landmarks, cfg.landmark_hidden),
            nn.LeakyReLU(slope),
            nn.Linear(cfg.landmark_hidden, cfg.landmark_dim),
            nn.LeakyReLU(slope),
            nn.Linear(cfg.landmark_dim, cfg.landmark_dim),
        )

    def forward(self, landmarks: Tensor) -> Tensor:
        return self.encoder_fc1(rearrange(landmarks, "b l xy -> b (l xy)"))


class ConditionEncoder(nn.Module):
    """Audio windows + landmarks -> the UNet's cross-attention context (official DiffusionWrapper).

    Args of ``forward``:
        audio: (B, smooth_frames, audio_window, audio_channels) windows around each frame
            (official ``audio_smooth``, (B, 8, 16, 29) for DeepSpeech).
        landmarks: (B, num_landmarks, 2) upper-face points in pixels of the 256-px crop
            (un-normalised, as the official loader gives them).
    Returns:
        context: (B, 1, audio_dim + landmark_dim).
    """

    def __init__(self, cfg: DiffTalkConditionConfig):
        super().__init__()
        self.cfg = cfg
        self.audio = AudioEncoder(cfg)
        self.audio_smooth = AudioSmoother(cfg)
        self.landmarks = LandmarkEncoder(cfg)

    def encode_audio(self, audio: Tensor) -> Tensor:
        """(B, S, window, channels) -> audio code (B, audio_dim)."""
        cfg = self.cfg
        expected = (cfg.smooth_frames, cfg.audio_window, cfg.audio_channels)
        if audio.ndim != 4 or tuple(audio.shape[1:]) != expected:
            raise ValueError(
                f"audio windows must have shape (B, {expected}), got {tuple(audio.shape)}"
            )
        codes = self.audio(rearrange(audio, "b s t c -> (b s) t c"))
        codes = rearrange(codes, "(b s) d -> b s d", s=cfg.smooth_frames)
        return self.audio_smooth(codes)[0]

    def encode_landmarks(self, landmarks: Tensor) -> Tensor:
        """(B, num_landmarks, 2) -> landmark code (B, landmark_dim)."""
        if landmarks.ndim != 3 or tuple(landmarks.shape[1:]) != (self.cfg.num_landmarks, 2):
            raise ValueError(
                f"landmarks must have shape (B, {self.cfg.num_landmarks}, 2), "
                f"got {tuple(landmarks.shape)}"
            )
        return self.landmarks(landmarks)

    def forward(self, audio: Tensor, landmarks: Tensor) -> Tensor:
        code = torch.cat([self.encode_audio(audio), self.encode_landmarks(landmarks)], dim=1)
        return code[:, None]  # -> (B, 1, context_dim)
