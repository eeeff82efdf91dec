"""LFG, the latent flow autoencoder of DAWN (paper Sec. 3.1; dawn_spec.md §2.1, §3.1, §6).

Glossary: FlowAutoencoder = LFG ("latent flow generator"); the latent of a frame is its flow
``(h, w, 2)`` plus occlusion ``(1, h, w)`` at ``h = w = S * scale_factor`` relative to a source
portrait. The A2V-FDM generates these latents; ``FlowAutoencoder.decode`` turns them into frames.

Submodules and state-dict keys equal the official ``LFG_*.pth`` (``generator.*``,
``region_predictor.*``, ``bg_predictor.*``), so official checkpoints load with ``strict=True``:

* ``RegionPredictor``: hourglass on the anti-aliased ``scale_factor`` image -> K region heat-maps ->
  centre ``shift``, covariance ``covar`` and ``affine = U diag(sqrt(S))`` from the SVD of ``covar``.
* ``BackgroundMotionPredictor``: encoder on ``cat(source, driving)`` -> 3x3 affine background motion.
* ``PixelwiseFlowPredictor``: region Gaussians + per-region warped sources -> hourglass -> softmax
  mask over the K + 1 motions (dense ``optical_flow``) and a sigmoid ``occlusion_map``.
* ``Generator``: source encoder (f0 @S, f1 @S/2, f2 @S/4), bottleneck, decoder with flow-warped,
  occlusion-blended skips. The encoder runs once per portrait; frames are decoded in batches.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from talkinghead.dawn.configs import FlowAEConfig
from talkinghead.dawn.models.blocks2d import (
    AntiAliasInterpolation2d,
    DownBlock2d,
    Hourglass,
    ResBlock2d,
    SameBlock2d,
    UpBlock2d,
    level_width,
)
from talkinghead.dawn.models.regions import (
    BackgroundMotionPredictor,
    RegionParams,
    RegionPredictor,
)
from talkinghead.dawn.models.warp import (
    deform_by_motions,
    heatmap_representation,
    resize_map,
    sparse_motions,
    warp,
)


class PixelwiseFlowPredictor(nn.Module):
    """Dense flow + occlusion from region motions (training-time ground-truth latent).

    ``forward`` returns every intermediate: ``source_down (B, C, h, w)``,
    ``heatmap_representation (B, K+1, 1, h, w)``, ``sparse_motion (B, K+1, h, w, 2)``,
    ``deformed_source (B, K+1, C, h, w)``, ``hourglass_out (B, F, h, w)``, ``mask (B, K+1, h, w)``
    (softmax), ``optical_flow (B, h, w, 2)``, ``occlusion_map (B, 1, h, w)``.
    """

    def __init__(self, cfg: FlowAEConfig, revert_axis_swap: bool = True) -> None:
        super().__init__()
        in_features = (cfg.num_regions + 1) * (cfg.num_channels + 1)
        self.hourglass = Hourglass(
            cfg.flow_block_expansion, in_features, cfg.flow_num_blocks, cfg.flow_max_features
        )
        self.mask = nn.Conv2d(self.hourglass.out_filters, cfg.num_regions + 1, 7, padding=3)
        self.occlusion = nn.Conv2d(self.hourglass.out_filters, 1, 7, padding=3)
        self.revert_axis_swap = revert_axis_swap
        if cfg.scale_factor != 1:
            self.down = AntiAliasInterpolation2d(cfg.num_channels, cfg.scale_factor)

    def downsample(self, x: Tensor) -> Tensor:
        return self.down(x) if hasattr(self, "down") else x

    def forward(
        self,
        source_image: Tensor,
        driving_params: RegionParams,
        source_params: RegionParams,
        bg_params: Tensor | None = None,
    ) -> dict[str, Tensor]:
        src = self.downsample(source_image)
        size = (src.shape[2], src.shape[3])
        heat = heatmap_representation(size, driving_params, source_params)
        motions = sparse_motions(
            size, driving_params, source_params, bg_params, revert_axis_swap=self.revert_axis_swap
        )
        deformed = deform_by_motions(src, motions)
        features = self.hourglass(torch.cat([heat, deformed], dim=2).flatten(1, 2))
        mask = F.softmax(self.mask(features), dim=1)  # -> (B, K+1, h, w)
        flow = torch.einsum("bkhwc,bkhw->bhwc", motions, mask)
        return {
            "source_down": src,
            "heatmap_representation": heat,
            "sparse_motion": motions,
            "deformed_source": deformed,
            "hourglass_out": features,
            "mask": mask,
            "optical_flow": flow,
            "occlusion_map": torch.sigmoid(self.occlusion(features)),
        }


class Generator(nn.Module):
    """Source encoder + flow-warped decoder (official ``Generator`` with ``skips=True``)."""

    def __init__(self, cfg: FlowAEConfig) -> None:
        super().__init__()
        be, mf, n = cfg.block_expansion, cfg.max_features, cfg.num_down_blocks
        self.pixelwise_flow_predictor = PixelwiseFlowPredictor(cfg)
        self.first = SameBlock2d(cfg.num_channels, be, kernel_size=7)
        self.down_blocks = nn.ModuleList(
            DownBlock2d(level_width(be, mf, i), level_width(be, mf, i + 1)) for i in range(n)
        )
        self.up_blocks = nn.ModuleList(
            UpBlock2d(level_width(be, mf, n - i), level_width(be, mf, n - i - 1)) for i in range(n)
        )
        self.bottleneck = nn.Sequential()
        for i in range(cfg.num_bottleneck_blocks):
            self.bottleneck.add_module(f"r{i}", ResBlock2d(level_width(be, mf, n)))
        self.final = nn.Conv2d(be, cfg.num_channels, 7, padding=3)

    def encode(self, source_image: Tensor) -> list[Tensor]:
        """Encoder features ``[f0 (be @S), f1 (2be @S/2), ..., fn (@S/2**n)]``."""
        feats = [self.first(source_image)]
        for block in self.down_blocks:
            feats.append(block(feats[-1]))
        return feats

    def compute_fea(self, source_image: Tensor) -> Tensor:
        """The deepest encoder feature (the A2V-FDM's source condition), ``(B, F, S/4, S/4)``."""
        return self.encode(source_image)[-1]

    @staticmethod
    def _blend(prev: Tensor | None, skip: Tensor, flow: Tensor, occlusion: Tensor) -> Tensor:
        # warp the source-side skip to the target, trust it where visible (occ -> 1)
        warped = warp(skip, flow)
        occ = resize_map(occlusion, (warped.shape[2], warped.shape[3]))
        if prev is None:
            return warped * occ
        return warped * occ + prev * (1 - occ)

    def decode(
        self, source_image: Tensor, feats: list[Tensor], flow: Tensor, occlusion: Tensor
    ) -> dict[str, Tensor]:
        """Official ``forward_with_flow`` given precomputed encoder features.

        ``source_image``/``feats`` have batch N or 1 (broadcast over the N flows);
        ``flow: (N, h, w, 2)``, ``occlusion: (N, 1, h, w)`` -> ``prediction``, ``deformed``
        ``(N, C, S, S)``.
        """
        out = self._blend(None, feats[-1], flow, occlusion)
        out = self.bottleneck(out)
        for i, block in enumerate(self.up_blocks):
            out = block(self._blend(out, feats[-(i + 1)], flow, occlusion))
        out = self._blend(out, feats[0], flow, occlusion)
        out = torch.sigmoid(self.final(out))
        prediction = self._blend(out, source_image, flow, occlusion)
        return {"prediction": prediction, "deformed": warp(source_image, flow)}

    def forward_with_flow(
        self, source_image: Tensor, optical_flow: Tensor, occlusion_map: Tensor
    ) -> dict[str, Tensor]:
        return self.decode(source_image, self.encode(source_image), optical_flow, occlusion_map)

    def forward(
        self,
        source_image: Tensor,
        driving_params: RegionParams,
        source_params: RegionParams,
        bg_params: Tensor | None = None,
    ) -> dict[str, Tensor]:
        """Training path: flow/occlusion from the pixel-wise predictor, then the same decoder."""
        feats = self.encode(source_image)
        motion = self.pixelwise_flow_predictor(
            source_image, driving_params, source_params, bg_params
        )
        out = self.decode(source_image, feats, motion["optical_flow"], motion["occlusion_map"])
        return {
            "bottle_neck_feat": feats[-1],
            "optical_flow": motion["optical_flow"],
            "occlusion_map": motion["occlusion_map"],
            **out,
        }


@dataclass(frozen=True)
class SourceEncoding:
    """A portrait encoded once for decoding many frames.

    ``image: (B, C, S, S)``; ``features``: ``f0 (B, be, S, S)``, ``f1 (B, 2be, S/2, S/2)``,
    ``f2 (B, 4be, S/4, S/4)`` (for the default two down blocks).
    """

    image: Tensor
    features: tuple[Tensor, ...]

    @property
    def fea(self) -> Tensor:
        """The deepest feature (``compute_fea``)."""
        return self.features[-1]


class FlowAutoencoder(nn.Module):
    """LFG (paper Sec. 3.1): encode a portrait once, decode (flow, occlusion) latents to frames."""

    def __init__(self, cfg: FlowAEConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.generator = Generator(cfg)
        self.region_predictor = RegionPredictor(cfg)
        self.bg_predictor = BackgroundMotionPredictor(cfg)

    def encode_source(self, source: Tensor) -> SourceEncoding:
        """``source: (B, C, S, S)`` in [0, 1] -> its encoder features."""
        if source.ndim != 4 or source.shape[1] != self.cfg.num_channels:
            raise ValueError(
                f"source must be (B, {self.cfg.num_channels}, S, S), got {tuple(source.shape)}"
            )
        return SourceEncoding(source, tuple(self.generator.encode(source)))

    def compute_fea(self, source: Tensor) -> Tensor:
        """A2V-FDM source feature ``(B, 4be, S/4, S/4)``."""
        return self.encode_source(source).fea

    def decode(
        self, source: Tensor | SourceEncoding, flow: Tensor, occlusion: Tensor
    ) -> dict[str, Tensor]:
        """Frames from latents (official ``forward_with_flow``, encoder run once).

        Args:
            source: portrait(s) ``(1 or N, C, S, S)`` or their ``SourceEncoding``.
            flow: ``(N, h, w, 2)`` sampling grid in [-1, 1], (x, y) order.
            occlusion: ``(N, 1, h, w)`` in [0, 1].

        Returns:
            ``prediction`` and ``deformed`` (source warped by the flow), each ``(N, C, S, S)``.
        """
        enc = source if isinstance(source, SourceEncoding) else self.encode_source(source)
        n = flow.shape[0]
        if flow.ndim != 4 or flow.shape[-1] != 2:
            raise ValueError(f"flow must be (N, h, w, 2), got {tuple(flow.shape)}")
        if occlusion.shape != (n, 1, *flow.shape[1:3]):
            raise ValueError(
                f"occlusion must be {(n, 1, *flow.shape[1:3])} to match flow, got {tuple(occlusion.shape)}"
            )
        if enc.image.shape[0] not in (1, n):
            raise ValueError(f"source batch {enc.image.shape[0]} must be 1 or the {n} frames")
        return self.generator.decode(enc.image, list(enc.features), flow, occlusion)

    def decode_frames(
        self,
        source: Tensor | SourceEncoding,
        flow: Tensor,
        occlusion: Tensor,
        *,
        batch_size: int = 16,
    ) -> Iterator[dict[str, Tensor]]:
        """``decode`` in chunks of ``batch_size`` frames (memory independent of video length).

        ``source`` must have batch 1 (one portrait); yields dicts of ``(<=batch_size, C, S, S)``.
        """
        if batch_size < 1:
            raise ValueError(f"batch_size={batch_size} must be >= 1")
        enc = source if isinstance(source, SourceEncoding) else self.encode_source(source)
        if enc.image.shape[0] != 1:
            raise ValueError(
                f"decode_frames takes one portrait, got a batch of {enc.image.shape[0]}"
            )
        for start in range(0, flow.shape[0], batch_size):
            stop = start + batch_size
            yield self.decode(enc, flow[start:stop], occlusion[start:stop])

    def forward(self, source: Tensor, driving: Tensor) -> dict[str, Tensor | RegionParams]:
        """Training forward: reconstruct ``driving`` from ``source``, both ``(B, C, S, S)``.

        Returns ``source_region_params``, ``driving_region_params`` (dicts, see
        ``RegionPredictor``), ``bg_params (B, 3, 3)``, ``optical_flow (B, h, w, 2)``,
        ``occlusion_map (B, 1, h, w)``, ``prediction``, ``deformed`` ``(B, C, S, S)``,
        ``bottle_neck_feat``.
        """
        src_params = self.region_predictor(source)
        drv_params = self.region_predictor(driving)
        bg_params = self.bg_predictor(source, driving)
        out = self.generator(source, drv_params, src_params, bg_params)
        return {
            "source_region_params": src_params,
            "driving_region_params": drv_params,
            "bg_params": bg_params,
            **out,
        }


def _count(sd: Mapping[str, Tensor], pattern: str) -> int:
    regex = re.compile(pattern)
    return len({m.group(1) for k in sd if (m := regex.fullmatch(k))})


def _max_features(widths: list[int], block_expansion: int, default: int) -> int:
    """A channel cap consistent with the observed widths ``widths[i]`` of levels ``i + 1``.

    A cap that no level reaches is invisible in the shapes; then the default is kept if it is
    large enough, so an official checkpoint maps back to exactly the official config.
    """
    if not widths:
        return default
    uncapped = [block_expansion * 2 ** (i + 1) for i in range(len(widths))]
    if widths == uncapped:
        # The cap was never reached: keep the default when it reproduces the same widths.
        return max(default, uncapped[-1])
    return max(widths)


def _encoder_dims(sd: Mapping[str, Tensor], prefix: str, default_max: int) -> tuple[int, int, int]:
    """(block_expansion, max_features, num_blocks) of an hourglass encoder under ``prefix``."""
    n = _count(sd, re.escape(prefix) + r"down_blocks\.(\d+)\.conv\.weight")
    if n == 0:
        raise ValueError(f"state dict has no '{prefix}down_blocks.*' keys")
    widths = [sd[f"{prefix}down_blocks.{i}.conv.weight"].shape[0] for i in range(n)]
    be = widths[0] // 2
    return be, _max_features(widths, be, default_max), n


def _anti_alias_scale(sd: Mapping[str, Tensor], key: str) -> float:
    """Scale of the ``AntiAliasInterpolation2d`` whose kernel is ``sd[key]`` (1 when absent)."""
    if key not in sd:
        return 1.0
    sigma = (sd[key].shape[-1] - 1) / 8
    return 1.0 / (2 * sigma + 1)


def config_from_state_dict(sd: Mapping[str, Tensor]) -> FlowAEConfig:
    """Architecture of an LFG state dict (official key names), read off the tensor shapes.

    Fields that shapes do not determine (``temperature``) keep their defaults; ``scale_factor`` and
    ``region_scale_factor`` are read from the anti-alias kernel sizes of the flow and region
    predictors (``2 * round(4 sigma) + 1``, ``scale = 1 / (2 sigma + 1)``).
    """
    default = FlowAEConfig()
    g = "generator."
    first = sd[g + "first.conv.weight"]
    be = first.shape[0]
    n_down = _count(sd, r"generator\.down_blocks\.(\d+)\.conv\.weight")
    widths = [sd[f"{g}down_blocks.{i}.conv.weight"].shape[0] for i in range(n_down)]
    flow_be, flow_max, flow_n = _encoder_dims(
        sd, g + "pixelwise_flow_predictor.hourglass.encoder.", default.flow_max_features
    )
    reg_be, reg_max, reg_n = _encoder_dims(
        sd, "region_predictor.predictor.encoder.", default.region_max_features
    )
    bg_be, bg_max, bg_n = _encoder_dims(sd, "bg_predictor.encoder.", default.bg_max_features)
    scale = _anti_alias_scale(sd, g + "pixelwise_flow_predictor.down.weight")
    region = _anti_alias_scale(sd, "region_predictor.down.weight")
    return dataclasses.replace(
        default,
        num_channels=first.shape[1],
        num_regions=sd["region_predictor.regions.weight"].shape[0],
        block_expansion=be,
        max_features=_max_features(widths, be, default.max_features),
        num_down_blocks=n_down,
        num_bottleneck_blocks=_count(sd, r"generator\.bottleneck\.r(\d+)\.conv1\.weight"),
        flow_block_expansion=flow_be,
        flow_max_features=flow_max,
        flow_num_blocks=flow_n,
        region_block_expansion=reg_be,
        region_max_features=reg_max,
        region_num_blocks=reg_n,
        bg_block_expansion=bg_be,
        bg_max_features=bg_max,
        bg_num_blocks=bg_n,
        scale_factor=scale,
        region_scale_factor=None if region == scale else region,
    )
