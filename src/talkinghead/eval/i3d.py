"""I3D feature extractor for FVD: the TorchScript ``i3d_torchscript.pt`` of StyleGAN-V.

The FVD community (StyleGAN-V, common_metrics_on_video_quality) ships the Kinetics-400 I3D as a
TorchScript file with the call ``detector(videos, rescale=..., resize=..., return_features=...)``;
we load the user's file with ``torch.jit.load`` rather than re-implementing the graph. Videos go
in as (B, 3, T, H, W) in [-1, 1] with ``rescale=False, resize=True`` (the model resizes to 224)
and ``return_features=True`` gives the 400-d logits-layer features that FVD compares.
FVD16 / FVD32 use clips of 16 / 32 consecutive frames.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from einops import rearrange

I3D_WEIGHTS_NAME = "i3d_torchscript.pt"
I3D_WEIGHTS_URL = "https://www.dropbox.com/s/ge9e5ujwgetktms/i3d_torchscript.pt?dl=1"


def load_i3d(path: str | Path, device: torch.device | str = "cpu") -> torch.jit.ScriptModule:
    """Load the I3D TorchScript file at ``path`` onto ``device``, in eval mode."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"I3D TorchScript file not found: {path}")
    model = torch.jit.load(str(path), map_location=device)
    return model.eval()


def video_clips(frames: np.ndarray, clip_len: int, max_clips: int | None = None) -> np.ndarray:
    """Non-overlapping clips (K, clip_len, H, W, 3) from frames (T, H, W, 3); K may be 0."""
    k = len(frames) // clip_len
    if max_clips is not None:
        k = min(k, max_clips)
    return frames[: k * clip_len].reshape(k, clip_len, *frames.shape[1:])


@torch.no_grad()
def i3d_features(
    model: torch.nn.Module,
    clips: np.ndarray,
    batch_size: int = 4,
    device: torch.device | str = "cpu",
) -> np.ndarray:
    """I3D features (K, D) of uint8 clips (K, T, H, W, 3)."""
    out = []
    for start in range(0, len(clips), batch_size):
        x = torch.from_numpy(np.ascontiguousarray(clips[start : start + batch_size])).to(device)
        x = rearrange(x.float() / 127.5 - 1.0, "b t h w c -> b c t h w")
        out.append(model(x, rescale=False, resize=True, return_features=True).float().cpu().numpy())
    return np.concatenate(out) if out else np.zeros((0, 400), dtype=np.float32)
