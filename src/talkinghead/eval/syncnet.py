"""SyncNet (syncnet_v2.model of joonson/syncnet_python) for LSE-C / LSE-D.

Two towers map 5 video frames (0.2 s of mouth crops, 224x224, BGR, 0-255) and 20 MFCC frames of
the same 0.2 s (13 x 20) into a shared 1024-d space; lip sync is judged by their Euclidean
distance over +-15 frame offsets (``metrics.sync_distances`` / ``metrics.lse_from_distances``),
exactly as Wav2Lip's evaluation does. Module and index names match the official state dict
(``netcnnaud.0.weight``, ``netfclip.3.bias``, ...).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from einops import rearrange
from torch import Tensor, nn

from talkinghead.eval.loading import load_official_state_dict

SYNCNET_WEIGHTS_NAME = "syncnet_v2.model"
SYNCNET_WEIGHTS_URL = "http://www.robots.ox.ac.uk/~vgg/software/lipsync/data/syncnet_v2.model"
SYNC_FPS = 25
MFCC_PER_FRAME = 4  # 100 MFCC frames/s over 25 video frames/s


def _conv_bn_relu(conv: nn.Module, channels: int, dims: int) -> list[nn.Module]:
    bn = nn.BatchNorm2d(channels) if dims == 2 else nn.BatchNorm3d(channels)
    return [conv, bn, nn.ReLU(inplace=True)]


def _head() -> nn.Sequential:
    return nn.Sequential(nn.Linear(512, 512), nn.BatchNorm1d(512), nn.ReLU(), nn.Linear(512, 1024))


class SyncNetV2(nn.Module):
    """Audio tower: (B, 1, 13, 20) MFCC -> (B, 1024); lip tower: (B, 3, 5, 224, 224) -> (B, 1024)."""

    def __init__(self) -> None:
        super().__init__()
        # Layer order fixes the Sequential indices of the official keys; 1x1 max-pools are no-ops
        # kept only so the indices line up.
        self.netcnnaud = nn.Sequential(
            *_conv_bn_relu(nn.Conv2d(1, 64, 3, padding=1), 64, 2),
            nn.MaxPool2d(1, 1),
            *_conv_bn_relu(nn.Conv2d(64, 192, 3, padding=1), 192, 2),
            nn.MaxPool2d(3, (1, 2)),
            *_conv_bn_relu(nn.Conv2d(192, 384, 3, padding=1), 384, 2),
            *_conv_bn_relu(nn.Conv2d(384, 256, 3, padding=1), 256, 2),
            *_conv_bn_relu(nn.Conv2d(256, 256, 3, padding=1), 256, 2),
            nn.MaxPool2d(3, 2),
            *_conv_bn_relu(nn.Conv2d(256, 512, (5, 4)), 512, 2),
        )
        self.netfcaud = _head()
        self.netfclip = _head()
        self.netcnnlip = nn.Sequential(
            *_conv_bn_relu(nn.Conv3d(3, 96, (5, 7, 7), stride=(1, 2, 2)), 96, 3),
            nn.MaxPool3d((1, 3, 3), (1, 2, 2)),
            *_conv_bn_relu(
                nn.Conv3d(96, 256, (1, 5, 5), stride=(1, 2, 2), padding=(0, 1, 1)), 256, 3
            ),
            nn.MaxPool3d((1, 3, 3), (1, 2, 2), padding=(0, 1, 1)),
            *_conv_bn_relu(nn.Conv3d(256, 256, (1, 3, 3), padding=(0, 1, 1)), 256, 3),
            *_conv_bn_relu(nn.Conv3d(256, 256, (1, 3, 3), padding=(0, 1, 1)), 256, 3),
            *_conv_bn_relu(nn.Conv3d(256, 256, (1, 3, 3), padding=(0, 1, 1)), 256, 3),
            nn.MaxPool3d((1, 3, 3), (1, 2, 2)),
            *_conv_bn_relu(nn.Conv3d(256, 512, (1, 6, 6)), 512, 3),
        )

    def forward_aud(self, mfcc_windows: Tensor) -> Tensor:
        return self.netfcaud(torch.flatten(self.netcnnaud(mfcc_windows), 1))

    def forward_lip(self, clips: Tensor) -> Tensor:
        return self.netfclip(torch.flatten(self.netcnnlip(clips), 1))


def load_syncnet(path: str | Path, device: torch.device | str = "cpu") -> SyncNetV2:
    """Build SyncNetV2 and strictly load ``syncnet_v2.model``."""
    model = SyncNetV2()
    model.load_state_dict(load_official_state_dict(path, model), strict=True)
    return model.eval().to(device)


@torch.no_grad()
def syncnet_features(
    model: SyncNetV2, crops_bgr: np.ndarray, audio_16k: np.ndarray, batch_size: int = 20
) -> tuple[Tensor, Tensor]:
    """Per-window lip and audio embeddings of a 25 fps clip.

    Args:
        crops_bgr: (T, 224, 224, 3) uint8 face crops in BGR order (syncnet_python reads with cv2).
        audio_16k: (S,) mono waveform at 16 kHz.
    Returns:
        video_feats, audio_feats: (W, 1024) each, W = min(T, S // 640) - 5 windows of 5 frames.
    """
    # scipy's signal module takes a second to import: not when the CLI builds its flags
    from talkinghead.eval.audio_features import mfcc

    cc = torch.from_numpy(mfcc(audio_16k)).float()  # -> (13, N)
    n = min(len(crops_bgr), len(audio_16k) // 640) - 5
    if n < 1:
        raise ValueError(
            f"clip too short for SyncNet: {len(crops_bgr)} frames, {len(audio_16k)} samples"
        )
    video = torch.from_numpy(np.ascontiguousarray(crops_bgr)).float()
    video = rearrange(video, "t h w c -> c t h w")
    device = next(model.parameters()).device
    lip, aud = [], []
    for start in range(0, n, batch_size):
        idx = range(start, min(n, start + batch_size))
        clips = torch.stack([video[:, i : i + 5] for i in idx]).to(device)
        mf = torch.stack([cc[:, i * MFCC_PER_FRAME : i * MFCC_PER_FRAME + 20] for i in idx])
        lip.append(model.forward_lip(clips).cpu())
        aud.append(model.forward_aud(mf[:, None].to(device)).cpu())
    return torch.cat(lip), torch.cat(aud)
