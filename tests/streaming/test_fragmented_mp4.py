"""The streamed mp4: a reader opens the growing file mid-write; complete, with audio, at the end."""

from __future__ import annotations

from pathlib import Path

import av
import numpy as np
import pytest

from talkinghead.outputs import save_stream

from .conftest import speech


def _write_wav(path: Path, samples: np.ndarray) -> Path:
    import wave

    with wave.open(str(path), "wb") as f:
        f.setnchannels(1)
        f.setsampwidth(2)
        f.setframerate(16000)
        f.writeframes((np.clip(samples, -1, 1) * 32767).astype("<i2").tobytes())
    return path


def _decoded_frames(path: Path) -> int:
    with av.open(str(path)) as container:
        return sum(1 for _ in container.decode(video=0))


def test_fragmented_mp4_is_readable_while_growing_and_complete_at_the_end(tmp_path) -> None:
    audio = _write_wav(tmp_path / "speech.wav", speech(4.0))
    out = tmp_path / "out.mp4"
    partial: list[Path] = []
    seen_mid_write: list[int] = []
    rng = np.random.default_rng(0)

    def batches():
        for i in range(10):  # 10 batches of 10 frames = 4 s
            if i == 6:
                assert not out.exists() and partial[0].is_file()
                seen_mid_write.append(_decoded_frames(partial[0]))
            yield rng.integers(0, 255, (10, 32, 32, 3), dtype=np.uint8)

    count = save_stream(batches(), out, fps=25, audio_path=audio, on_open=partial.append)
    assert count == 100
    assert 25 <= seen_mid_write[0] < 100  # at least the first second's fragment was readable
    assert not partial[0].exists()
    assert _decoded_frames(out) == 100
    with av.open(str(out)) as container:
        assert container.streams.audio and container.streams.video
        assert float(container.streams.audio[0].duration * container.streams.audio[0].time_base) == pytest.approx(4.0, abs=0.1)


def test_a_failed_stream_leaves_no_file(tmp_path) -> None:
    out = tmp_path / "out.mp4"

    def failing():
        yield np.zeros((5, 32, 32, 3), np.uint8)
        raise RuntimeError("cancelled")

    with pytest.raises(RuntimeError):
        save_stream(failing(), out, fps=25, audio_path=None)
    assert list(tmp_path.iterdir()) == []
