"""Reference frames by mouth opening: synthetic-only training aids for the packaged demo model.

A flow autoencoder (LFG) moves pixels of its source frame; it can close a mouth it sees open (the
warp compresses the inner mouth) but has to paint an open mouth from a closed one, which a small
model trained briefly on CPU does not learn (``assets/demo/MODEL_CARD.md``). So the demo model is
trained and used with a *half-open* source frame: inner mouth and teeth visible, eyes open.

* ``half_open_frames``: the frames usable as such a source (mouth opening in ``HALF_OPEN``).
* ``reference_index``: the one frame nearest ``TARGET_OPEN`` (the demo portrait, the benchmark's
  source with ``source="open"``).
* ``mined_driving``: a driving frame drawn with weight growing with its mouth-opening difference
  from the source, so that LFG pairs carry mouth motion rather than frames whose mouths barely
  differ.

All need the synthetic ground truth ``mouth_open`` (F,) in [0, 1] and ``blink`` (F,) (1 = closed).
"""

from __future__ import annotations

import numpy as np
import torch

__all__ = ["HALF_OPEN", "TARGET_OPEN", "half_open_frames", "mined_driving", "reference_index"]

HALF_OPEN = (0.35, 0.8)  # mouth openings accepted for a training source frame
TARGET_OPEN = 0.6  # the opening of the demo portrait and of the benchmark's source frame
_FLOOR = 0.1  # weight of a driving frame whose mouth equals the source's (keeps head-only pairs)


def reference_index(mouth_open: np.ndarray, blink: np.ndarray, target: float = TARGET_OPEN) -> int:
    """Index of the eyes-open frame whose mouth opening is nearest ``target`` (first on ties)."""
    cost = np.abs(np.asarray(mouth_open, np.float64) - target) + 10.0 * (np.asarray(blink) > 0)
    return int(np.argmin(cost))


def half_open_frames(mouth_open: np.ndarray, blink: np.ndarray) -> np.ndarray:
    """Indices (K,) of eyes-open frames with a half-open mouth; ``reference_index`` if none."""
    m = np.asarray(mouth_open)
    ok = (m >= HALF_OPEN[0]) & (m <= HALF_OPEN[1]) & (np.asarray(blink) == 0)
    idx = np.flatnonzero(ok)
    return idx if idx.size else np.array([reference_index(mouth_open, blink)])


def mined_driving(mouth_open: np.ndarray, source: int, generator: torch.Generator) -> int:
    """A driving frame index, drawn with weight ``|open - open[source]| + 0.1``."""
    m = torch.as_tensor(np.asarray(mouth_open, np.float64))
    weights = (m - m[source]).abs() + _FLOOR
    return int(torch.multinomial(weights, 1, generator=generator).item())
