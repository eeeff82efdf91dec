"""Streaming DAWN on the tiny random model: equal to the all-at-once call when one window covers
the clip, seeded, chunked audio, windows as planned, memory flat in clip length."""

from __future__ import annotations

import resource
from dataclasses import replace

import numpy as np
import pytest
import torch

from talkinghead.dawn.configs import GenerateOptions
from talkinghead.dawn.streaming import StreamOptions, Window, plan_next, stream_latents

from .conftest import speech

FAST = GenerateOptions(num_steps=2, seed=3, decode_batch=8, crop=False)


def frames(batches) -> np.ndarray:
    return np.concatenate(list(batches))


def chunks(samples: np.ndarray, size: int = 1234):
    for i in range(0, len(samples), size):
        yield samples[i : i + size]


@pytest.mark.parametrize("sampler", ["ddim", "dpmpp-2m"])
def test_one_window_equals_the_all_at_once_call(tiny_pipe, tiny_portrait, sampler) -> None:
    audio = speech(1.2)  # 30 frames
    options = replace(FAST, sampler=sampler)
    whole = tiny_pipe(tiny_portrait, audio, options)
    streamed = frames(tiny_pipe.stream(tiny_portrait, audio, options, window_frames=32))
    assert streamed.shape == (30, 32, 32, 3)
    np.testing.assert_array_equal(streamed, frames(whole.frames))


def test_windows_are_seeded_and_chunked_audio_gives_the_same_frames(
    tiny_pipe, tiny_portrait
) -> None:
    audio = speech(2.4)  # 60 frames: 4 windows of 24 with overlap 8
    kw = {"window_frames": 24, "overlap": 8, "lookahead": 4}
    first = frames(tiny_pipe.stream(tiny_portrait, audio, FAST, **kw))
    assert first.shape[0] == 60
    np.testing.assert_array_equal(frames(tiny_pipe.stream(tiny_portrait, audio, FAST, **kw)), first)
    live = frames(tiny_pipe.stream(tiny_portrait, chunks(audio), FAST, **kw))
    np.testing.assert_array_equal(live, first)
    other = frames(tiny_pipe.stream(tiny_portrait, audio, replace(FAST, seed=4), **kw))
    assert not np.array_equal(other, first)


def test_bad_live_audio_is_refused_with_a_sentence(tiny_pipe, tiny_portrait) -> None:
    with pytest.raises(ValueError, match="shorter than one video frame"):
        frames(tiny_pipe.stream(tiny_portrait, iter([]), FAST))
    with pytest.raises(ValueError, match="mono 16 kHz"):
        frames(tiny_pipe.stream(tiny_portrait, iter([np.zeros((2, 800), np.float32)]), FAST))


def test_plan_covers_every_frame_once_with_full_windows() -> None:
    opts = StreamOptions(window_frames=10, overlap=3, lookahead=2)
    known, wins = 0, []
    while (win := plan_next(known, 33, opts)) is not None:
        wins.append(win)
        known = win.end
    assert wins[0] == Window(0, 0, 10) and wins[1] == Window(7, 10, 17)
    assert all(w.end - w.start == 10 for w in wins) and wins[-1].end == 33
    assert [w.new for w in wins[1:]] == [w.end for w in wins[:-1]]
    with pytest.raises(ValueError, match="overlap"):
        StreamOptions(window_frames=8, overlap=8)


def _peak_growth_mib(pipe, portrait, seconds: float) -> float:
    """RSS peak growth (MiB) while streaming ``seconds`` of live audio through the latents path."""
    audio = chunks(speech(seconds), 16000)  # produced on the fly, like a microphone
    options = replace(FAST, num_steps=1)
    stream = StreamOptions(window_frames=250, overlap=4, lookahead=2)
    gen = torch.Generator().manual_seed(0)
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    count = 0
    for chunk in stream_latents(pipe, portrait, audio, options, stream, gen):
        count += chunk.latents.shape[2]
    assert count == int(seconds * 25)
    return (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) / 1024


@pytest.mark.slow
def test_memory_is_flat_from_1000_to_10000_frames(tiny_pipe, tiny_portrait) -> None:
    _peak_growth_mib(tiny_pipe, tiny_portrait, 40)  # 1,000 frames: warms the allocator up
    growth = _peak_growth_mib(tiny_pipe, tiny_portrait, 400)  # 10,000 frames
    # all at once, 10,000 tiny frames hold > 200 MiB of UNet activations
    assert growth < 40, f"peak RSS grew by {growth:.0f} MiB from 1,000 to 10,000 frames"
