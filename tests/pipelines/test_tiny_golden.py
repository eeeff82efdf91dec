"""The tiny-pipeline golden slice: an end-to-end tiny-preset generation against committed values.

See tiny_golden.py for what runs and the tolerances; regenerate the values only with
``scripts/update_golden.py``.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from .tiny_golden import FRAME_ATOL, FRAME_MEAN_ATOL, MOTION_ATOL, run_tiny_golden

GOLDEN = Path(__file__).parents[1] / "fixtures" / "tiny_pipeline_golden.json"


def test_tiny_pipeline_matches_golden() -> None:
    expected = json.loads(GOLDEN.read_text())
    actual = run_tiny_golden()
    for key in ("num_frames", "frame_shape", "crop_box", "bbox_crop"):
        assert actual[key] == expected[key], key
    np.testing.assert_allclose(
        actual["pose_delta"], expected["pose_delta"], rtol=0, atol=MOTION_ATOL
    )
    np.testing.assert_allclose(actual["eye_delta"], expected["eye_delta"], rtol=0, atol=MOTION_ATOL)
    diff = np.abs(np.asarray(actual["frames"]) - np.asarray(expected["frames"]))
    assert diff.max() <= FRAME_ATOL and diff.mean() <= FRAME_MEAN_ATOL, (diff.max(), diff.mean())
    assert abs(actual["frame_mean"] - expected["frame_mean"]) <= FRAME_MEAN_ATOL
