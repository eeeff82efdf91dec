"""DiffTalk's HuBERT audio path with a tiny random HuBERT (no download): 50-Hz features cut into
the official window shapes go through AudioNet / AudioAttNet, and a model directory whose index
says ``hubert`` loads (with ``hubert_path``) and runs."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest
import torch

from talkinghead.difftalk.audio_windows import frame_windows
from talkinghead.difftalk.conditioning import ConditionEncoder
from talkinghead.difftalk.model_dir import DiffTalkModules, save_model_dir
from talkinghead.difftalk.pipeline import DiffTalkOptions, DiffTalkPipeline
from talkinghead.media.audio_features import HubertFeatureExtractor
from talkinghead.model_index import read_model_index

from .conftest import face_video, tiny_modules

HIDDEN = 16  # the tiny HuBERT's width (hubert-large: 1024)
FRAMES = 30  # 1.2 s at 25 fps
SPEECH = (0.3 * np.sin(np.arange(FRAMES * 640) / 9.0)).astype(np.float32)


@pytest.fixture(scope="module")
def hubert_dir(tmp_path_factory: pytest.TempPathFactory, save_tiny_hubert) -> Path:
    return save_tiny_hubert(tmp_path_factory.mktemp("hubert"), hidden_size=HIDDEN)


def hubert_modules(width: int = HIDDEN) -> DiffTalkModules:
    """The tiny DiffTalk with its audio encoder reading ``width`` HuBERT features per step."""
    modules = tiny_modules()
    cfg = modules.config
    condition = dataclasses.replace(cfg.condition, audio_channels=width)
    modules.config = dataclasses.replace(cfg, condition=condition, audio_features="hubert")
    torch.manual_seed(1)
    modules.condition = ConditionEncoder(condition).eval()
    return modules


def test_hubert_windows_go_through_audionet_and_audioattnet(hubert_dir: Path, backend) -> None:
    extractor = HubertFeatureExtractor.from_pretrained(hubert_dir)
    modules = hubert_modules()
    pipe = DiffTalkPipeline(modules, face_backend=backend, audio_encoder=extractor)
    windows = pipe.audio_condition(SPEECH, DiffTalkOptions())
    assert windows.shape == (FRAMES, 8, 16, HIDDEN)  # DeepSpeech's (8, 16, 29) with HuBERT's width
    features = extractor(SPEECH, 2 * FRAMES)  # -> (60, HIDDEN) at 50 Hz
    assert features.abs().sum() > 0
    own = frame_windows(features, FRAMES)  # window i centred on frame i
    torch.testing.assert_close(windows[10, 4], own[10])  # frame 10 sees windows of frames 6..13
    torch.testing.assert_close(windows[0, :4], torch.zeros(4, 16, HIDDEN))  # before the clip

    encoder = modules.condition.train().requires_grad_(True)
    landmarks = torch.rand(FRAMES, 39, 2) * 32
    context = encoder(windows, landmarks)
    assert context.shape == (FRAMES, 1, modules.config.condition.context_dim)
    context.square().sum().backward()
    for name, p in encoder.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all() and p.grad.abs().sum() > 0, name


def test_a_hubert_model_dir_loads_and_runs(
    hubert_dir: Path, media_dir: Path, tmp_path: Path, backend
) -> None:
    from talkinghead.registry import load_pipeline

    model_dir = save_model_dir(hubert_modules(), tmp_path / "difftalk-hubert")
    assert read_model_index(model_dir).audio_features == "hubert"
    face3d = media_dir / "face3d"
    with pytest.raises(ValueError, match="hubert_path"):
        DiffTalkPipeline.from_pretrained(model_dir, face3d_dir=face3d)
    pipe = load_pipeline(model_dir, hubert_path=hubert_dir, face3d_dir=face3d)
    assert isinstance(pipe, DiffTalkPipeline) and pipe.config.audio_features == "hubert"
    pipe.face_backend = backend  # the template face drawn into face_video
    result = pipe(face_video(3), SPEECH, DiffTalkOptions(seed=0, num_steps=2))
    frames = np.concatenate(list(result.frames))
    assert frames.shape == (FRAMES, 72, 96, 3) and result.faceless_frames == 0


def test_a_hubert_of_another_width_is_refused(hubert_dir: Path, backend) -> None:
    extractor = HubertFeatureExtractor.from_pretrained(hubert_dir)
    pipe = DiffTalkPipeline(hubert_modules(24), face_backend=backend, audio_encoder=extractor)
    with pytest.raises(ValueError, match="gives 16 features per step but .* reads 24"):
        pipe.audio_condition(SPEECH, DiffTalkOptions())
