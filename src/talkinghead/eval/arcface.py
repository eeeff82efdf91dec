"""ArcFace IResNet-100 (insightface ``arcface_torch``) for the identity metric CSIM.

Weights: the ``backbone.pth`` of insightface's ``ms1mv3_arcface_r100_fp16`` model (any r100
ArcFace backbone of arcface_torch has this layout); save it as ``arcface_r100.pth`` in the
weights directory. Input: RGB face crops (N, 3, 112, 112) in [0, 1]; output: (N, 512) embeddings.
CSIM = cosine similarity of the embeddings of the source identity and each generated frame.
"""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from talkinghead.eval.loading import load_official_state_dict

ARCFACE_WEIGHTS_NAME = "arcface_r100.pth"
ARCFACE_WEIGHTS_URL = (
    "https://github.com/deepinsight/insightface/tree/master/recognition/arcface_torch "
    "(model zoo: ms1mv3_arcface_r100_fp16/backbone.pth)"
)


def _conv3x3(cin: int, cout: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(cin, cout, 3, stride=stride, padding=1, bias=False)


class IBasicBlock(nn.Module):
    """Pre-activation-style block: BN -> conv -> BN -> PReLU -> conv(stride) -> BN, plus shortcut."""

    def __init__(self, cin: int, cout: int, stride: int) -> None:
        super().__init__()
        self.bn1 = nn.BatchNorm2d(cin, eps=1e-5)
        self.conv1 = _conv3x3(cin, cout)
        self.bn2 = nn.BatchNorm2d(cout, eps=1e-5)
        self.prelu = nn.PReLU(cout)
        self.conv2 = _conv3x3(cout, cout, stride)
        self.bn3 = nn.BatchNorm2d(cout, eps=1e-5)
        self.downsample: nn.Module | None = None
        if stride != 1 or cin != cout:
            self.downsample = nn.Sequential(
                nn.Conv2d(cin, cout, 1, stride=stride, bias=False), nn.BatchNorm2d(cout, eps=1e-5)
            )

    def forward(self, x: Tensor) -> Tensor:
        out = self.bn3(self.conv2(self.prelu(self.bn2(self.conv1(self.bn1(x))))))
        return out + (x if self.downsample is None else self.downsample(x))


class IResNet(nn.Module):
    """ArcFace backbone; ``layers`` = blocks per stage ((3, 13, 30, 3) for r100)."""

    def __init__(
        self, layers: tuple[int, int, int, int] = (3, 13, 30, 3), embedding_dim: int = 512
    ) -> None:
        super().__init__()
        self.conv1 = _conv3x3(3, 64)
        self.bn1 = nn.BatchNorm2d(64, eps=1e-5)
        self.prelu = nn.PReLU(64)
        widths = (64, 128, 256, 512)
        cin = 64
        for i, (width, depth) in enumerate(zip(widths, layers)):
            blocks = [IBasicBlock(cin, width, 2)] + [
                IBasicBlock(width, width, 1) for _ in range(depth - 1)
            ]
            setattr(self, f"layer{i + 1}", nn.Sequential(*blocks))
            cin = width
        self.bn2 = nn.BatchNorm2d(512, eps=1e-5)
        self.fc = nn.Linear(512 * 7 * 7, embedding_dim)
        self.features = nn.BatchNorm1d(embedding_dim, eps=1e-5)

    def forward(self, faces: Tensor) -> Tensor:
        if faces.shape[-2:] != (112, 112):
            faces = F.interpolate(faces, size=(112, 112), mode="bilinear", align_corners=False)
        x = self.prelu(self.bn1(self.conv1((faces - 0.5) / 0.5)))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))  # -> (N, 512, 7, 7)
        return self.features(self.fc(torch.flatten(self.bn2(x), 1)))


def load_arcface(path: str | Path, device: torch.device | str = "cpu") -> IResNet:
    """Build IResNet-100 and strictly load an arcface_torch r100 ``backbone.pth``."""
    model = IResNet()
    model.load_state_dict(load_official_state_dict(path, model), strict=True)
    return model.eval().to(device)
