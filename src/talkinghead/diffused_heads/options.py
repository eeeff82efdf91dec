"""Runtime knobs of a Diffused Heads generation (light module: the CLI reads its fields for ``--help``)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

# the samplers a Diffused Heads model can run (sampling.py); "ancestral" is the official one
SAMPLERS = ("ancestral", "ddim", "dpmpp-2m")


@dataclass(frozen=True)
class DiffusedHeadsOptions:
    """Runtime knobs of one Diffused Heads generation. CLI flags take their defaults from here."""

    CHOICES: ClassVar[dict[str, tuple[str, ...]]] = {"sampler": SAMPLERS}

    num_steps: int = 100  # network calls per frame (official: 100 ancestral steps; paper: 200)
    # "ancestral" (official, >= 7 steps) | "ddim" or "dpmpp-2m": deterministic, fewer steps over the
    # same network, not official (quality cost: benchmarks/diffused_heads_speed.py)
    sampler: str = "ancestral"
    seed: int | None = None  # None draws a fresh seed (reported in the result)
    fps: int = 25  # output frame rate; the model only runs at 25 fps (one audio window per frame)
    # every N frames re-anchor a motion frame on the identity (0: off; train branch 15)
    stabilize: int = 0
    # align the face to the CREMA framing (False: squash the image, as the official)
    crop: bool = True
    crop_margin: float = 1.0  # > 1 shows more around the face in the aligned frame
    paste_back: bool = False  # put the generated face back into the original photo
    output_size: int | None = None  # side of the output frames in pixels; None = the model's (256)
    # run the UNet in the official op order (slower); the default fast path equals it to float32 rounding
    official_order: bool = False
