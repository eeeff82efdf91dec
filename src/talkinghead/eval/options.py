"""Runtime knobs of ``talkinghead eval`` and ``eval-synth`` (light: the CLI reads their defaults to
build its flags without importing the metric code and its dependencies)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class EvalOptions:
    """Runtime knobs of ``evaluate.evaluate_directory``."""

    batch_size: int = 16  # images (or 5-frame SyncNet windows) per network call
    vshift: int = 15  # SyncNet offsets searched: -vshift..+vshift frames
    fid_max_frames: int | None = None  # frames per video for FID (None: every frame)
    csim_max_frames: int = 32  # frames per video for CSIM
    progress: bool = True  # show a progress bar


@dataclass(frozen=True)
class SynthBenchOptions:
    """Knobs of one ``synth_benchmark.run_synth_benchmark`` run."""

    num_steps: int = 20  # DDIM steps of the generated videos
    seed: int = 0  # generation seed (clip i uses seed + i)
    max_clips: int | None = None  # evaluate only the first N held-out clips
    batch_size: int = 16  # LFG frames per batch
    pbnet: bool = False  # also generate with PBNet pose/blinks (blink rate)
    source: str = "first"  # source frame: the clip's "first" or "open" (half-open mouth, eyes open)
    # the sampler of families whose options have one (Diffused Heads: "ddim"); None: the family's
    # default (DAWN always samples with DDIM)
    sampler: str | None = None

    def __post_init__(self) -> None:
        if self.source not in ("first", "open"):
            raise ValueError(f"source={self.source!r} must be 'first' or 'open'")
