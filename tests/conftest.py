"""Shared test fixtures: where ../shared lives, golden tensors, offline hub."""

from __future__ import annotations

import importlib.util
import os
import sys
from pathlib import Path

# MKL picks its vector-math code path per processor, and its float32 sin/cos/exp/sqrt then differ in
# the last bits between machines (seen on an AVX-512 Xeon against the recording machine): the
# golden tests run MKL in its conditional-reproducibility mode, set before torch loads it.
os.environ.setdefault("MKL_CBWR", "COMPATIBLE")

import pytest
import torch
from safetensors.torch import load_file

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

REPO_ROOT = Path(__file__).resolve().parents[1]
SHARED_DIR = Path(os.environ.get("TALKINGHEAD_SHARED", REPO_ROOT.parent / "shared"))
GOLDEN_DIR = SHARED_DIR / "golden"
MEDIA_DIR = SHARED_DIR / "media"
REFERENCE_DIR = SHARED_DIR / "reference"


def _require(path: Path) -> Path:
    # Parity tests must never be skipped silently: a missing ../shared is an error.
    if not path.exists():
        raise FileNotFoundError(
            f"{path} is missing: the tests read ../shared beside the repository "
            "(or set TALKINGHEAD_SHARED)."
        )
    return path


@pytest.fixture(scope="session")
def golden_dir() -> Path:
    return _require(GOLDEN_DIR)


@pytest.fixture(scope="session")
def media_dir() -> Path:
    return _require(MEDIA_DIR)


@pytest.fixture(scope="session")
def reference_dir() -> Path:
    return _require(REFERENCE_DIR)


def load_golden(name: str) -> dict[str, torch.Tensor]:
    """Tensors of ``../shared/golden/<name>.safetensors``."""
    return load_file(str(_require(GOLDEN_DIR / f"{name}.safetensors")))


def max_rel_error(actual: torch.Tensor, expected: torch.Tensor) -> float:
    """max |a - e| / max |e|: one number per tensor, robust to entries near zero."""
    scale = expected.abs().max().clamp_min(1e-12)
    return float((actual.double() - expected.double()).abs().max() / scale)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """``@pytest.mark.weights`` runs only when TALKINGHEAD_WEIGHTS names real official weights;
    ``@pytest.mark.gpu`` only when CUDA is present."""
    skip_weights = pytest.mark.skip(reason="set TALKINGHEAD_WEIGHTS to the official DAWN download")
    skip_gpu = pytest.mark.skip(reason="needs a CUDA device")
    for item in items:
        if "weights" in item.keywords and not os.environ.get("TALKINGHEAD_WEIGHTS"):
            item.add_marker(skip_weights)
        if "gpu" in item.keywords and not torch.cuda.is_available():
            item.add_marker(skip_gpu)


def write_tiny_hubert(folder: Path, hidden_size: int = 8, pos_groups: int = 2) -> Path:
    """A seeded random one-layer HuBERT (no download) and its processor in ``folder``.

    The default conv kernels and strides keep HuBERT's receptive field (400 samples) and hop (320),
    so its features come at 50 Hz like hubert-large's; the global RNG is left as it was.
    ``pos_groups`` must divide ``hidden_size`` (16 for a 1024-wide one, as hubert-large).
    """
    from transformers import HubertConfig, HubertModel, Wav2Vec2FeatureExtractor

    config = HubertConfig(
        hidden_size=hidden_size, num_hidden_layers=1, num_attention_heads=2, intermediate_size=16,
        conv_dim=(8,) * 7, num_conv_pos_embeddings=16, num_conv_pos_embedding_groups=pos_groups,
        do_stable_layer_norm=True, feat_extract_norm="layer",
    )  # fmt: skip
    with torch.random.fork_rng():
        torch.manual_seed(0)
        HubertModel(config).save_pretrained(folder)
    Wav2Vec2FeatureExtractor(sampling_rate=16000, do_normalize=True).save_pretrained(folder)
    return folder


@pytest.fixture(scope="session")
def save_tiny_hubert():
    """``save_tiny_hubert(folder, hidden_size=8)`` -> ``folder`` holding a tiny random HuBERT."""
    return write_tiny_hubert


@pytest.fixture(scope="module")
def load_script():
    """``load_script("train_demo_model")``: a file of ``scripts/`` imported as a module (and
    forgotten after the test module)."""
    names: list[str] = []

    def load(name: str):
        path = Path(__file__).resolve().parent.parent / "scripts" / f"{name}.py"
        spec = importlib.util.spec_from_file_location(name, path)
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module  # its dataclasses look their module up there
        names.append(name)
        spec.loader.exec_module(module)
        return module

    yield load
    for name in names:
        del sys.modules[name]
