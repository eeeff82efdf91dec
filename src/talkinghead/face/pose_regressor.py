"""3DDFA_V2 face regressor: MobileNetV1 mapping a 120x120 face crop to 62 3DMM parameters.

Used by DAWN's initial-state extraction (dawn_spec.md §1.1 step 3) to get the source portrait's head
pose. The network is the MobileNetV1 of 3DDFA_V2 (Guo et al., "Towards Fast, Accurate and Stable 3D
Dense Face Alignment", ECCV 2020) with a width multiplier ("widen factor"); the released
``mb05_120x120.pth`` (widen 0.5) and ``mb1_120x120.pth`` (widen 1.0) checkpoints load unchanged.

Outputs (both normalised; the caller de-normalises):
  * ``params`` (B, 62): 12 affine camera numbers (a 3x4 matrix, row-major) + 40 shape + 10
    expression coefficients, in units of the training set's per-parameter std (``raw*std + mean``).
  * ``landmarks`` (B, 136): an auxiliary 2-D landmark head (``fc_lm``) that the checkpoints carry
    and that 3DDFA_V2 never calls. It is kept so the checkpoint loads with ``strict=True``.

Input: ``(B, 3, 120, 120)`` BGR float, ``(pixel - 127.5) / 128``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import torch
from torch import Tensor, nn

# (channels at widen 1.0, stride) of the 13 depth-wise separable blocks after the stem, in order.
_BLOCKS: tuple[tuple[str, int, int], ...] = (
    ("dw2_1", 64, 1),
    ("dw2_2", 128, 2),
    ("dw3_1", 128, 1),
    ("dw3_2", 256, 2),
    ("dw4_1", 256, 1),
    ("dw4_2", 512, 2),
    ("dw5_1", 512, 1),
    ("dw5_2", 512, 1),
    ("dw5_3", 512, 1),
    ("dw5_4", 512, 1),
    ("dw5_5", 512, 1),
    ("dw5_6", 1024, 2),
    ("dw6", 1024, 1),
)
_STEM_CHANNELS = 32


@dataclass(frozen=True)
class FaceRegressorConfig:
    """Architecture of the 3DDFA MobileNetV1 regressor."""

    widen_factor: float = 0.5  # channel multiplier of MobileNetV1 (0.5 for mb05, 1.0 for mb1)
    num_params: int = 62  # 3DMM parameters: 12 pose + 40 shape + 10 expression
    num_landmarks: int = 136  # outputs of the auxiliary landmark head (68 points x 2)
    input_size: int = 120  # side of the square input crop in pixels


class DepthwiseSeparable(nn.Module):
    """3x3 depth-wise conv + BN + ReLU, then 1x1 point-wise conv + BN + ReLU."""

    def __init__(self, in_channels: int, out_channels: int, stride: int) -> None:
        super().__init__()
        self.conv_dw = nn.Conv2d(
            in_channels, in_channels, 3, stride=stride, padding=1, groups=in_channels, bias=False
        )
        self.bn_dw = nn.BatchNorm2d(in_channels)
        self.conv_sep = nn.Conv2d(in_channels, out_channels, 1, bias=False)
        self.bn_sep = nn.BatchNorm2d(out_channels)

    def forward(self, x: Tensor) -> Tensor:
        x = torch.relu(self.bn_dw(self.conv_dw(x)))
        return torch.relu(self.bn_sep(self.conv_sep(x)))


class FaceRegressor(nn.Module):
    """MobileNetV1 -> (62 3DMM params, 136 landmark numbers), both normalised.

    Args:
        cfg: architecture; ``widen_factor`` must match the checkpoint (see ``widen_factor_of``).
    """

    def __init__(self, cfg: FaceRegressorConfig) -> None:
        super().__init__()
        self.cfg = cfg

        def width(c: int) -> int:
            return int(c * cfg.widen_factor)

        self.conv1 = nn.Conv2d(3, width(_STEM_CHANNELS), 3, stride=2, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(width(_STEM_CHANNELS))
        in_ch = _STEM_CHANNELS
        for name, out_ch, stride in _BLOCKS:
            self.add_module(name, DepthwiseSeparable(width(in_ch), width(out_ch), stride))
            in_ch = out_ch
        self.fc_param = nn.Linear(width(in_ch), cfg.num_params)
        self.fc_lm = nn.Linear(width(in_ch), cfg.num_landmarks)

    def features(self, x: Tensor) -> Tensor:
        """x: (B, 3, 120, 120) normalised BGR -> pooled features (B, 1024 * widen)."""
        x = torch.relu(self.bn1(self.conv1(x)))
        for name, _, _ in _BLOCKS:
            x = getattr(self, name)(x)
        return x.mean(dim=(2, 3))

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """x: (B, 3, 120, 120) -> (params (B, 62), landmarks (B, 136)), both normalised."""
        if x.ndim != 4 or x.shape[1] != 3:
            raise ValueError(f"expected input of shape (B, 3, H, W), got {tuple(x.shape)}")
        feat = self.features(x)
        return self.fc_param(feat), self.fc_lm(feat)


def clean_state_dict(checkpoint: Mapping[str, object]) -> dict[str, Tensor]:
    """The state dict of a 3DDFA_V2 checkpoint: unwrap ``state_dict`` and strip ``module.``."""
    sd = checkpoint.get("state_dict", checkpoint)
    if not isinstance(sd, Mapping):
        raise TypeError("checkpoint has no state_dict mapping")
    return {k.removeprefix("module."): v for k, v in sd.items() if isinstance(v, Tensor)}


def widen_factor_of(state_dict: Mapping[str, Tensor]) -> float:
    """Read the width multiplier from the stem conv: conv1 has 32 * widen output channels."""
    if "conv1.weight" not in state_dict:
        raise ValueError("not a 3DDFA MobileNetV1 state dict: 'conv1.weight' is missing")
    return state_dict["conv1.weight"].shape[0] / _STEM_CHANNELS


def load_face_regressor(state_dict: Mapping[str, Tensor]) -> FaceRegressor:
    """Build a ``FaceRegressor`` sized from ``state_dict`` and load it strictly (eval mode).

    Args:
        state_dict: output of ``clean_state_dict(torch.load(path, weights_only=True))``.
    """
    cfg = FaceRegressorConfig(
        widen_factor=widen_factor_of(state_dict),
        num_params=state_dict["fc_param.weight"].shape[0],
        num_landmarks=state_dict["fc_lm.weight"].shape[0] if "fc_lm.weight" in state_dict else 136,
    )
    with torch.device("meta"):
        model = FaceRegressor(cfg)
    model.load_state_dict(state_dict, strict=True, assign=True)
    return model.eval()
