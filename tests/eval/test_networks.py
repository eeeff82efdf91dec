"""Metric networks: strict loading of random state dicts in the official layouts, FID/FVD of a
set against itself, and the I3D TorchScript call signature."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from torch import Tensor, nn

from talkinghead.eval.arcface import IResNet, load_arcface
from talkinghead.eval.i3d import i3d_features, load_i3d, video_clips
from talkinghead.eval.inception import FIDInceptionV3, load_fid_inception
from talkinghead.eval.metrics import frechet_distance_features
from talkinghead.eval.syncnet import load_syncnet, syncnet_features

from .stubs import TinyI3D


def _random_like(shapes: dict[str, tuple[int, ...]], seed: int = 0) -> dict[str, Tensor]:
    g = torch.Generator().manual_seed(seed)
    out = {}
    for name, shape in shapes.items():
        t = torch.randn(shape, generator=g) * 0.05
        if name.endswith("running_var"):
            t = t.abs() + 1.0  # a variance must be positive
        out[name] = t
    return out


def _official_shapes(model: nn.Module) -> dict[str, tuple[int, ...]]:
    # Files saved before PyTorch 0.4.1 carry no BatchNorm counters: leave them out on purpose.
    return {
        k: tuple(v.shape)
        for k, v in model.state_dict().items()
        if not k.endswith("num_batches_tracked")
    }


def _syncnet_official_shapes() -> dict[str, tuple[int, ...]]:
    """Hand-written inventory of syncnet_v2.model (joonson/syncnet_python SyncNetModel.S)."""
    shapes: dict[str, tuple[int, ...]] = {}

    def conv_bn(prefix: str, i: int, w: tuple[int, ...]) -> None:
        shapes[f"{prefix}.{i}.weight"], shapes[f"{prefix}.{i}.bias"] = w, (w[0],)
        for s in ("weight", "bias", "running_mean", "running_var"):
            shapes[f"{prefix}.{i + 1}.{s}"] = (w[0],)

    for i, w in zip(
        (0, 4, 8, 11, 14, 18),
        (
            (64, 1, 3, 3),
            (192, 64, 3, 3),
            (384, 192, 3, 3),
            (256, 384, 3, 3),
            (256, 256, 3, 3),
            (512, 256, 5, 4),
        ),
    ):
        conv_bn("netcnnaud", i, w)
    for i, w in zip(
        (0, 4, 8, 11, 14, 18),
        (
            (96, 3, 5, 7, 7),
            (256, 96, 1, 5, 5),
            (256, 256, 1, 3, 3),
            (256, 256, 1, 3, 3),
            (256, 256, 1, 3, 3),
            (512, 256, 1, 6, 6),
        ),
    ):
        conv_bn("netcnnlip", i, w)
    for head in ("netfcaud", "netfclip"):
        shapes[f"{head}.0.weight"], shapes[f"{head}.0.bias"] = (512, 512), (512,)
        for s in ("weight", "bias", "running_mean", "running_var"):
            shapes[f"{head}.1.{s}"] = (512,)
        shapes[f"{head}.3.weight"], shapes[f"{head}.3.bias"] = (1024, 512), (1024,)
    return shapes


def test_syncnet_strict_load_of_official_layout(tmp_path: Path) -> None:
    path = tmp_path / "syncnet_v2.model"
    sd = _random_like(_syncnet_official_shapes())
    torch.save(sd, path)
    model = load_syncnet(path)
    assert torch.equal(model.state_dict()["netcnnlip.18.weight"], sd["netcnnlip.18.weight"])
    crops = np.random.default_rng(0).integers(0, 255, (8, 224, 224, 3), dtype=np.uint8)
    audio = np.random.default_rng(1).normal(scale=0.1, size=8 * 640).astype(np.float32)
    video_f, audio_f = syncnet_features(model, crops, audio, batch_size=2)
    assert video_f.shape == audio_f.shape == (3, 1024)
    assert torch.isfinite(video_f).all() and torch.isfinite(audio_f).all()


def test_syncnet_rejects_wrong_layout(tmp_path: Path) -> None:
    sd = _random_like(_syncnet_official_shapes())
    sd["netcnnaud.99.weight"] = torch.zeros(1)
    torch.save(sd, tmp_path / "bad.model")
    with pytest.raises(RuntimeError, match="Unexpected key"):
        load_syncnet(tmp_path / "bad.model")


def test_fid_inception_official_layout_and_self_fid(tmp_path: Path) -> None:
    shapes = _official_shapes(FIDInceptionV3())
    # Spot checks against the pytorch-fid file: torchvision Inception3 names, 1008-way fc, no aux head.
    assert shapes["Conv2d_1a_3x3.conv.weight"] == (32, 3, 3, 3)
    assert shapes["Mixed_6b.branch7x7dbl_5.conv.weight"] == (192, 128, 1, 7)
    assert shapes["Mixed_7c.branch_pool.conv.weight"] == (192, 2048, 1, 1)
    assert shapes["fc.weight"] == (1008, 2048)
    assert not any(k.startswith("AuxLogits") for k in shapes)
    n_params = sum(int(np.prod(s)) for k, s in shapes.items() if "running" not in k)
    assert n_params == 23_850_960  # torchvision inception_v3 without aux (23,834,568) + 8 classes

    path = tmp_path / "pt_inception-2015-12-05-6726825d.pth"
    torch.save(_random_like(shapes), path)
    model = load_fid_inception(path)
    images = torch.rand(3, 3, 48, 48, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        feats = model(images).numpy()
    assert feats.shape == (3, 2048) and np.isfinite(feats).all()
    assert abs(frechet_distance_features(feats, feats)) < 1e-6


def test_arcface_r100_official_layout(tmp_path: Path) -> None:
    shapes = _official_shapes(IResNet())
    assert shapes["layer3.29.conv2.weight"] == (256, 256, 3, 3)
    assert shapes["layer1.0.downsample.0.weight"] == (64, 64, 1, 1)
    assert shapes["fc.weight"] == (512, 512 * 7 * 7)
    assert shapes["features.running_var"] == (512,)
    assert shapes["prelu.weight"] == (64,)
    assert sum(1 for k in shapes if k.endswith("conv1.weight")) == 1 + 3 + 13 + 30 + 3

    path = tmp_path / "arcface_r100.pth"
    torch.save(_random_like(shapes), path)
    model = load_arcface(path)
    with torch.no_grad():
        emb = model(torch.rand(2, 3, 112, 112, generator=torch.Generator().manual_seed(0)))
    assert emb.shape == (2, 512) and torch.isfinite(emb).all()


def test_i3d_torchscript_loader_and_self_fvd(tmp_path: Path) -> None:
    torch.manual_seed(0)
    path = tmp_path / "i3d_torchscript.pt"
    torch.jit.script(TinyI3D()).save(str(path))
    model = load_i3d(path)
    frames = np.random.default_rng(0).integers(0, 255, (64, 16, 16, 3), dtype=np.uint8)
    clips = video_clips(frames, 16)
    assert clips.shape == (4, 16, 16, 16, 3)
    feats = i3d_features(model, clips, batch_size=3)
    assert feats.shape == (4, 400)
    assert abs(frechet_distance_features(feats, feats)) < 1e-6
    assert frechet_distance_features(feats, feats + 1.0) == pytest.approx(400.0, rel=1e-6)
