"""Stand-ins for the metric networks' weights in the eval tests."""

from __future__ import annotations

from torch import Tensor, nn


class TinyI3D(nn.Module):
    """Stand-in with the TorchScript I3D call signature: (videos, rescale, resize, return_features)."""

    def __init__(self) -> None:
        super().__init__()
        self.proj = nn.Linear(3, 400)

    def forward(
        self, x: Tensor, rescale: bool = False, resize: bool = False, return_features: bool = False
    ) -> Tensor:
        if rescale:
            x = x / 127.5 - 1.0
        if resize:
            x = nn.functional.interpolate(
                x, size=(x.shape[2], 8, 8), mode="trilinear", align_corners=False
            )
        feats = self.proj(x.mean(dim=(2, 3, 4)))  # -> (B, 400)
        return feats if return_features else feats.softmax(-1)
