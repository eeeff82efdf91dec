"""``Conv3d`` that takes the oneDNN kernel on CPU whatever the clip length.

PyTorch picks a float32 CPU convolution backend by a size heuristic: a 3x3 (or 1x1) kernel at batch
1 runs oneDNN only when ``N * C * F * H`` exceeds 20,480, and otherwise the unfused im2col path
(``slow_conv3d``). In the A2V-FDM UNet that product is ``32 * F * 16`` at every level of the demo
model (channels double as the side halves), so a 40-frame streaming window sits exactly on the
line and every block convolution took the slow path: 2-4x slower per call, a third of a
window's time (issue #18). This subclass calls the oneDNN kernel directly for float32 CPU
inference, the same one PyTorch picks for a 41-frame clip. Everything else (training, other
dtypes and devices, ``torch.compile`` graphs) goes through ``nn.Conv3d`` unchanged. Parameters and
state-dict keys are those of ``nn.Conv3d``.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn


def _onednn_applies(x: Tensor, weight: Tensor) -> bool:
    return (
        not torch.compiler.is_compiling()  # traced graphs (fake tensors) keep aten.convolution
        and x.device.type == "cpu"
        and x.dtype == torch.float32
        and weight.dtype == torch.float32
        and not (torch.is_grad_enabled() and (x.requires_grad or weight.requires_grad))
        and torch.backends.mkldnn.is_available()
        and torch.backends.mkldnn.enabled
    )


class Conv3d(nn.Conv3d):
    """``nn.Conv3d`` (zero padding) that runs float32 CPU inference on oneDNN at any input size."""

    def _conv_forward(self, x: Tensor, weight: Tensor, bias: Tensor | None) -> Tensor:
        if self.padding_mode != "zeros" or not _onednn_applies(x, weight):
            return super()._conv_forward(x, weight, bias)
        return torch.ops.aten.mkldnn_convolution(
            x.contiguous(), weight, bias, self.padding, self.stride, self.dilation, self.groups
        )
