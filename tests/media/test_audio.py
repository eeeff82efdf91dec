"""Audio loading (PyAV), HuBERT chunking/interpolation and the log-mel fallback (spec §1.2)."""

from __future__ import annotations

import wave
from pathlib import Path

import av
import numpy as np
import pytest
import torch
from scipy.interpolate import interp1d
from transformers import HubertModel

from talkinghead.media.audio import AudioError, load_audio, num_video_frames
from talkinghead.media.audio_features import (
    HubertFeatureExtractor,
    hubert_chunk_bounds,
    hubert_num_frames,
    interpolate_frames,
    log_mel_features,
)
from talkinghead.media.video import VideoWriter

RATE_IN = 44100


def _stereo_tone(seconds: float = 1.0, rate: int = RATE_IN) -> np.ndarray:
    """(2, N) float32: the same 440 Hz tone at amplitude 0.5 (left) and 0.25 (right)."""
    t = np.arange(int(seconds * rate)) / rate
    tone = np.sin(2 * np.pi * 440 * t)
    return np.stack([0.5 * tone, 0.25 * tone]).astype(np.float32)


def _encode_audio(path: Path, codec: str, samples: np.ndarray, rate: int = RATE_IN) -> Path:
    """Write (2, N) float samples with PyAV in ``codec``; the container follows the suffix."""
    with av.open(str(path), mode="w") as container:
        stream = container.add_stream(codec, rate=rate, layout="stereo")
        if codec == "vorbis":
            stream.codec_context.options = {"strict": "experimental"}
        fmt = stream.codec_context.format.name
        data = samples if fmt.endswith("p") else samples.T.reshape(1, -1)
        if fmt.startswith("s16"):
            data = (data * 32767).astype(np.int16)
        elif fmt.startswith("s32"):
            data = (data * (2**31 - 1)).astype(np.int32)
        frame = av.AudioFrame.from_ndarray(np.ascontiguousarray(data), format=fmt, layout="stereo")
        frame.sample_rate = rate
        frame.pts = 0
        container.mux(stream.encode(frame))
        container.mux(stream.encode(None))
    return path


def _write_wav(path: Path, samples: np.ndarray, rate: int = 16000) -> Path:
    """Mono 16-bit wav with the standard library (no PyAV), so decoding is tested independently."""
    with wave.open(str(path), "wb") as f:
        f.setnchannels(1)
        f.setsampwidth(2)
        f.setframerate(rate)
        f.writeframes((np.clip(samples, -1, 1) * 32767).astype("<i2").tobytes())
    return path


def _write_bytes(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


# ---------------------------------------------------------------------------- load_audio


def test_load_wav_16k_mono_is_exact(media_dir: Path) -> None:
    wav = media_dir / "audio" / "WRA_MarcoRubio_000.wav"
    with wave.open(str(wav)) as f:
        raw = np.frombuffer(f.readframes(f.getnframes()), dtype="<i2")
    audio = load_audio(wav)
    assert audio.dtype == np.float32 and audio.ndim == 1
    np.testing.assert_array_equal(audio, raw.astype(np.float32) / 32768)
    assert num_video_frames(audio.shape[0]) == 525  # int(336225 / 16000 * 25)


@pytest.mark.parametrize(
    ("name", "codec"),
    [
        ("a.wav", "pcm_s16le"),
        ("a.flac", "flac"),
        ("a.mp3", "libmp3lame"),
        ("a.ogg", "vorbis"),
        ("a.m4a", "aac"),
    ],
)
def test_formats_resampled_to_16k_mono(tmp_path: Path, name: str, codec: str) -> None:
    path = _encode_audio(tmp_path / name, codec, _stereo_tone(1.0))
    audio = load_audio(path)
    assert audio.dtype == np.float32 and audio.ndim == 1
    # 1 s at 16 kHz; lossy codecs add up to one frame of priming/padding.
    assert abs(audio.shape[0] - 16000) <= 480, audio.shape
    # Mono is the channel average: RMS of a 0.375 sine (channel 0 alone would give 0.354).
    rms = float(np.sqrt(np.mean(audio[1600:14400] ** 2)))
    assert abs(rms - 0.375 / np.sqrt(2)) < 0.02, rms


def test_lossless_stereo_average_is_exact(tmp_path: Path) -> None:
    samples = _stereo_tone(1.0, rate=16000)
    audio = load_audio(_encode_audio(tmp_path / "a.flac", "flac", samples, rate=16000))
    np.testing.assert_allclose(audio, samples.mean(0), atol=2e-4)


def test_audio_track_of_a_video(tmp_path: Path, media_dir: Path) -> None:
    video = tmp_path / "v.mp4"
    with VideoWriter(video, audio_path=media_dir / "audio" / "WRA_MarcoRubio_000.wav") as w:
        for _ in range(25):
            w.write(np.zeros((16, 16, 3), np.uint8))
    audio = load_audio(video)
    assert 16000 <= audio.shape[0] <= 16000 + 1024  # 1 s plus at most one AAC frame of padding


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda d: d / "missing.wav", "not found"),
        (lambda d: _write_bytes(d / "empty.mp3", b""), "empty"),
        (lambda d: _write_bytes(d / "junk.mp3", bytes(range(256)) * 64), "could not decode"),
        (lambda d: _write_wav(d / "none.wav", np.zeros(0)), "no audio samples"),
        (lambda d: _write_wav(d / "short.wav", 0.5 * np.ones(1600)), "too short"),
        (lambda d: _write_wav(d / "silent.wav", np.zeros(16000)), "the audio is silent"),
    ],
    ids=["missing", "empty", "corrupt", "no-samples", "too-short", "silent"],
)
def test_bad_audio_raises_clear_error(tmp_path: Path, make, message: str) -> None:
    path = make(tmp_path)
    with pytest.raises(AudioError, match=message):
        load_audio(path)


def test_video_without_audio_raises(tmp_path: Path) -> None:
    video = tmp_path / "mute.mp4"
    with VideoWriter(video) as w:
        w.write(np.zeros((16, 16, 3), np.uint8))
    with pytest.raises(AudioError, match="no audio stream"):
        load_audio(video)
    assert issubclass(AudioError, ValueError)


def test_num_video_frames_truncates() -> None:
    assert num_video_frames(16000) == 25
    assert num_video_frames(16000 + 639) == 25
    assert num_video_frames(16000 + 640) == 26
    with pytest.raises(ValueError):
        num_video_frames(-1)


# ---------------------------------------------------------------------------- HuBERT


@pytest.fixture(scope="module")
def tiny_hubert_dir(tmp_path_factory: pytest.TempPathFactory, save_tiny_hubert) -> Path:
    return save_tiny_hubert(tmp_path_factory.mktemp("tiny_hubert"))


@pytest.fixture(scope="module")
def speech(media_dir: Path) -> np.ndarray:
    return load_audio(media_dir / "audio" / "WRA_MarcoRubio_000.wav")


def test_chunk_bounds_follow_official_rule() -> None:
    assert hubert_chunk_bounds(336225) == [(0, 320080), (320000, 336225)]
    assert hubert_chunk_bounds(320000) == [(0, 320000)]
    assert hubert_chunk_bounds(320399) == [(0, 320080)]  # remainder 399 < kernel
    assert hubert_chunk_bounds(640500) == [(0, 320080), (320000, 640080), (640000, 640500)]
    assert hubert_chunk_bounds(399) == []
    for n in (400, 1000, 320000, 320399, 320400, 336225, 640500, 700001):
        frames = sum((e - s - 400) // 320 + 1 for s, e in hubert_chunk_bounds(n))
        assert abs(frames - hubert_num_frames(n)) <= 1, n


def test_hubert_features_on_21s_clip(tiny_hubert_dir: Path, speech: np.ndarray) -> None:
    extractor = HubertFeatureExtractor.from_pretrained(tiny_hubert_dir, dtype=torch.float32)
    num_frames = num_video_frames(speech.shape[0])
    features = extractor(speech, num_frames)
    assert features.shape == (num_frames, 8) == (525, 8)
    assert features.dtype == torch.float32 and torch.isfinite(features).all()

    # The chunked sequence equals direct (unchunked) HubertModel runs on each chunk.
    hidden = extractor.hidden_states(speech)
    assert hidden.shape == (hubert_num_frames(speech.shape[0]), 8) == (1050, 8)
    x = speech.astype(np.float64)
    values = torch.from_numpy(((x - x.mean()) / np.sqrt(x.var() + 1e-7)).astype(np.float32))
    torch.testing.assert_close(extractor.normalize(speech), values, atol=1e-5, rtol=0)
    model = HubertModel.from_pretrained(tiny_hubert_dir, local_files_only=True).eval()
    with torch.no_grad():
        first = model(values[None, :320080]).last_hidden_state[0]
        rest = model(values[None, 320000:]).last_hidden_state[0]
    assert first.shape[0] == 1000 and rest.shape[0] == 50
    torch.testing.assert_close(hidden, torch.cat([first, rest]), atol=1e-5, rtol=1e-5)

    # Interpolation to 25 fps keeps both endpoints and matches scipy's interp1d.
    torch.testing.assert_close(features[0], hidden[0])
    torch.testing.assert_close(features[-1], hidden[-1])
    expected = interp1d(np.arange(1050), hidden.double().numpy(), axis=0)(
        np.linspace(0, 1049, num_frames)
    )
    assert np.abs(features.double().numpy() - expected).max() < 1e-5


def test_hubert_short_clip_single_chunk(tiny_hubert_dir: Path, speech: np.ndarray) -> None:
    extractor = HubertFeatureExtractor.from_pretrained(tiny_hubert_dir)
    clip = speech[:16000]
    assert extractor(clip, 25).shape == (25, 8)
    with pytest.raises(ValueError, match="needs >= 400"):
        extractor(speech[:399], 1)
    with pytest.raises(ValueError, match="mono"):
        extractor(np.stack([clip, clip]), 25)


def test_from_pretrained_needs_a_local_model_folder(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="not a HuBERT model folder"):
        HubertFeatureExtractor.from_pretrained(tmp_path)


def test_interpolate_frames_edge_cases() -> None:
    seq = torch.arange(6.0).reshape(3, 2)
    torch.testing.assert_close(interpolate_frames(seq, 5)[:, 0], torch.tensor([0, 1, 2, 3, 4.0]))
    torch.testing.assert_close(interpolate_frames(seq, 1), seq[:1])
    torch.testing.assert_close(interpolate_frames(seq[:1], 4), seq[:1].expand(4, 2))
    with pytest.raises(ValueError):
        interpolate_frames(seq, 0)


def test_log_mel_features(speech: np.ndarray) -> None:
    feats = log_mel_features(speech, 525, n_mels=8)
    assert feats.shape == (525, 8) and feats.dtype == torch.float32
    assert torch.isfinite(feats).all()
    assert feats.mean().abs() < 0.2  # per-band normalised before interpolation
    raw = log_mel_features(speech[:16000], 25, n_mels=80, normalize=False)
    assert raw.shape == (25, 80) and torch.isfinite(raw).all()
    with pytest.raises(ValueError, match="mono"):
        log_mel_features(np.zeros((2, 1000), np.float32), 3)
