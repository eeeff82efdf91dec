"""Fixtures for end-to-end generation tests: a tiny random model in our format with a tiny random
HuBERT beside it, the 3DDFA_V2 assets linked from ../shared, and short speech clips."""

from __future__ import annotations

import wave
from pathlib import Path

import numpy as np
import pytest

from talkinghead.dawn.configs import PRESETS
from talkinghead.dawn.weights import FACE3D_DIRNAME, save_random_model
from talkinghead.media.audio import load_audio

CLIP_SECONDS = 1.2  # 30 video frames: seconds-long runs, still several attention windows
SAMPLE_RATE = 16000


def write_wav(path: Path, samples: np.ndarray, rate: int = SAMPLE_RATE) -> Path:
    """Mono 16-bit PCM wav from float samples in [-1, 1]."""
    pcm = np.clip(np.asarray(samples, np.float64) * 32767, -32768, 32767).astype("<i2")
    with wave.open(str(path), "wb") as f:
        f.setnchannels(1)
        f.setsampwidth(2)
        f.setframerate(rate)
        f.writeframes(pcm.tobytes())
    return path


@pytest.fixture(scope="session")
def tiny_model_dir(
    tmp_path_factory: pytest.TempPathFactory, media_dir: Path, save_tiny_hubert
) -> Path:
    """``<tmp>/tiny``: random tiny preset (HuBERT-conditioned), tiny HuBERT, face3d symlink."""
    out = save_random_model(
        PRESETS["tiny"], tmp_path_factory.mktemp("weights") / "tiny", audio_features="hubert"
    )
    # the tiny UNet and PBNet read 8-dim audio features
    save_tiny_hubert(out / "hubert-large-ls960-ft")
    (out / FACE3D_DIRNAME).symlink_to(media_dir / "face3d", target_is_directory=True)
    return out


@pytest.fixture(scope="session")
def speech_wav(tmp_path_factory: pytest.TempPathFactory, media_dir: Path) -> Path:
    """The first ``CLIP_SECONDS`` of the shared speech clip, 16 kHz mono wav."""
    full = load_audio(media_dir / "audio" / "WRA_MarcoRubio_000.wav")
    clip = full[: int(CLIP_SECONDS * SAMPLE_RATE)]
    return write_wav(tmp_path_factory.mktemp("audio") / "speech.wav", clip)


@pytest.fixture(scope="session")
def portrait(media_dir: Path) -> Path:
    return media_dir / "portraits" / "real_male1.jpeg"
