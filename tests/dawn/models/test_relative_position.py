"""The one T5 relative position bias (PBNet and UNet): bucket map, offset table, window masks."""

from __future__ import annotations

import pytest
import torch

from talkinghead.dawn.models.relative_position import (
    MASK_VALUE,
    RelativePositionBias,
    dense_bias,
    relative_position_bucket,
)


def test_bucket_map_matches_spec() -> None:
    # dawn_spec.md §2.3.2: rel (key - query) -> bucket with 32 buckets, max_distance 32
    expected = {
        -40: 15,
        -27: 15,
        -26: 14,
        -23: 14,
        -22: 13,
        -20: 13,
        -19: 12,
        -16: 12,
        -15: 11,
        -14: 11,
        -13: 10,
        -11: 9,
        -9: 8,
        -8: 8,
        -7: 7,
        -1: 1,
        0: 0,
        1: 17,
        7: 23,
        8: 24,
        9: 24,
        10: 25,
        12: 26,
        14: 27,
        15: 27,
        16: 28,
        19: 28,
        20: 29,
        22: 29,
        23: 30,
        26: 30,
        27: 31,
        100: 31,
    }
    rel = torch.tensor(list(expected))
    got = relative_position_bucket(rel, 32, 32).tolist()
    assert dict(zip(expected, got)) == expected


def test_dense_bias_window_mask() -> None:
    bias = RelativePositionBias(heads=2, num_buckets=32, max_distance=32)
    dense = bias(10, window=3)
    assert dense.shape == (2, 10, 10)
    assert dense[0, 0, 4] < -1e7 and dense[0, 0, 3] > -1e7 and dense[1, 9, 5] < -1e7


def test_relative_bias_buckets_and_window() -> None:
    rel = torch.arange(-300, 301)
    buckets = relative_position_bucket(rel, num_buckets=128, max_distance=128)
    assert buckets.min() == 0 and buckets.max() == 127
    assert (
        (buckets[rel == 0] == 0).all()
        and buckets[rel == -1].item() == 1
        and buckets[rel == 1].item() == 65
    )
    assert (buckets[rel <= -128] == 63).all() and (buckets[rel >= 128] == 127).all()
    bias = RelativePositionBias(heads=2, num_buckets=16, max_distance=16, window=3)
    masked = bias.eval()(8)
    assert (masked[:, 0, 4:] < -1e7).all() and (masked[:, 0, :4] > -1e7).all()
    assert (bias.train()(8) > -1e7).all()  # eval-only mask (official)


def test_windowed_table_expands_like_the_full_one() -> None:
    """The UNet's local mode keeps only offsets <= window in its table; the masked matrix is the same."""
    bias = RelativePositionBias(heads=3, num_buckets=8, max_distance=8)
    n, window = 12, 4
    full = dense_bias(bias.offset_table(n - 1), n, window)
    assert torch.equal(dense_bias(bias.offset_table(window), n, window), full)
    assert torch.equal(bias(n, window=window), full)


def test_construction_window_equals_run_time_window() -> None:
    """PBNet's eval-mode mask (fixed window) and the UNet's run-time window give the same bias."""
    fixed = RelativePositionBias(heads=2, num_buckets=16, max_distance=16, window=3).eval()
    run_time = RelativePositionBias(heads=2, num_buckets=16, max_distance=16)
    run_time.load_state_dict(fixed.state_dict(), strict=True)
    assert list(fixed.state_dict()) == ["relative_attention_bias.weight"]
    assert torch.equal(fixed(9), run_time(9, window=3))
    assert torch.equal(fixed.train()(9), run_time(9))
    assert (fixed.eval()(9).amin() < MASK_VALUE / 2).item()


def test_bad_arguments() -> None:
    with pytest.raises(ValueError, match="num_buckets"):
        RelativePositionBias(heads=2, num_buckets=3, max_distance=8)
    with pytest.raises(ValueError, match="max_distance"):
        RelativePositionBias(heads=2, num_buckets=16, max_distance=4)
    with pytest.raises(ValueError, match="window"):
        RelativePositionBias(heads=2, num_buckets=16, max_distance=16, window=-1)
