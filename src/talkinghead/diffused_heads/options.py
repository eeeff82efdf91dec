"""Runtime knobs of a Diffused Heads generation (light module: the CLI reads its fields for ``--help``)."""

from __future__ import annotations

from dataclasses import dataclass

SAMPLERS = ("ancestral", "ddim")


@dataclass(frozen=True)
class DiffusedHeadsOptions:
    """Runtime knobs of one Diffused Heads generation. CLI flags take their defaults from here."""

    num_steps: int = 100  # respaced ancestral steps per frame (official 100; the paper used 200)
    sampler: str = "ancestral"  # "ancestral" (official) | "ddim" (fewer steps, not official, cost unmeasured)
    seed: int | None = None  # None draws a fresh seed (reported in the result)
    fps: int = 25  # output frame rate; the model only runs at 25 fps (one audio window per frame)
    stabilize: int = 0  # every N frames re-anchor a motion frame on the identity (0: off; train branch 15)
    crop: bool = True  # align the face to the CREMA framing (False: squash the image, as the official)
    crop_margin: float = 1.0  # > 1 shows more around the face in the aligned frame
    paste_back: bool = False  # put the generated face back into the original photo
    output_size: int | None = None  # side of the output frames in pixels; None = the model's (256)
