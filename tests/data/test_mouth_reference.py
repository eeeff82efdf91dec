"""Reference frames by mouth opening (synthetic-only training aids of the demo model)."""

from __future__ import annotations

import numpy as np
import torch

from talkinghead.data.mouth_reference import half_open_frames, mined_driving, reference_index


def test_reference_index_skips_blinks() -> None:
    mouth = np.array([0.0, 0.6, 0.58, 0.9])
    assert reference_index(mouth, np.zeros(4)) == 1
    assert reference_index(mouth, np.array([0, 1, 0, 0])) == 2


def test_half_open_frames_and_fallback() -> None:
    mouth = np.array([0.0, 0.4, 0.7, 0.95, 0.5])
    assert half_open_frames(mouth, np.array([0, 0, 0, 0, 1])).tolist() == [1, 2]
    assert half_open_frames(np.array([0.0, 0.1, 1.0]), np.zeros(3)).tolist() == [2]  # nearest 0.6


def test_mined_driving_prefers_large_differences() -> None:
    mouth = np.array([0.5] * 9 + [0.0])
    gen = torch.Generator().manual_seed(0)
    draws = [mined_driving(mouth, 0, gen) for _ in range(400)]
    # weight 0.6 for the closed frame against 0.1 for each of the 9 others: 0.6 / 1.5 = 40 %
    assert 0.3 < np.mean(np.array(draws) == 9) < 0.5
