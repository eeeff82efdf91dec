"""Does the packaged demo talk? The generated mouth opening against the demo speech's envelope.

Used by the shipped-model test (``tests/test_demo_talks.py``) and the model-card pictures
(``scripts/demo_model_card.py``). The demo portrait is a synthetic face whose person and mouth
box are known (``portrait.json``: ``style_seed``, ``mouth_scale``), so the mouth opening of a
generated frame is measured as in the synthetic benchmark (``synth_benchmark.mouth_opening``: the
inner-mouth and teeth share of a window around the mouth), in a window widened by ``MARGIN``
pixels to follow the head's small PBNet motion. The speech envelope is the mouth opening the
synthetic data would draw for the speech (``data.synth.clips.mouth_from_envelope`` of the RMS per
frame).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

__all__ = ["MARGIN", "DemoMouth", "demo_mouth", "render_demo_frames", "speech_envelope"]

MARGIN = 3.0  # pixels added around the portrait's mouth box (64 px frames)


@dataclass
class DemoMouth:
    """Per-frame signals of one generated demo video."""

    opening: np.ndarray  # (F,) generated mouth opening (synth_benchmark.mouth_opening units)
    envelope: np.ndarray  # (F,) speech envelope as a mouth opening in [0, 1]
    corr: float  # Pearson correlation of the two


def speech_envelope(audio: np.ndarray, num_frames: int) -> np.ndarray:
    """(N,) float 16 kHz speech -> (F,) the mouth opening the synthetic data draws for it."""
    from talkinghead.data.synth.clips import FPS, mouth_from_envelope
    from talkinghead.data.synth.voice import SAMPLE_RATE, loudness_envelope

    return mouth_from_envelope(loudness_envelope(audio, num_frames, FPS, SAMPLE_RATE))


def demo_mouth(frames: np.ndarray, audio: np.ndarray, demo_dir: str | Path) -> DemoMouth:
    """Measure ``frames`` (F, 64, 64, 3) uint8 of a demo video against its speech ``audio`` (N,).

    ``demo_dir`` holds ``portrait.json`` with the person (``style_seed``, ``mouth_scale``) and the
    portrait's mouth box (``mouth_box``), as ``demo.make_demo_assets`` writes them.
    """
    from talkinghead.data.synth.clips import clip_style
    from talkinghead.demo import FACE_FILE
    from talkinghead.eval.synth_benchmark import mouth_opening, pearson

    path = Path(demo_dir) / FACE_FILE
    face = json.loads(path.read_text())
    if "mouth_box" not in face or "style_seed" not in face:
        raise ValueError(
            f"{path} has no mouth box or person; remake the assets with demo.make_demo_assets"
        )
    style = clip_style(face["style_seed"], float(face.get("mouth_scale", 1.0)))
    x0, y0, x1, y1 = face["mouth_box"]
    box = np.array([x0 - MARGIN, y0 - MARGIN, x1 + MARGIN, y1 + MARGIN], np.float64)
    opening = mouth_opening(frames, np.repeat(box[None], len(frames), 0), style)
    envelope = speech_envelope(audio, len(frames))
    return DemoMouth(opening, envelope, pearson(opening, envelope))


def render_demo_frames(
    demo_dir: str | Path | None = None, *, steps: int = 20, seed: int = 0, device: str = "cpu"
) -> tuple[np.ndarray, np.ndarray]:
    """The demo as ``talkinghead demo`` renders it (PBNet pose and blinks): (F, 64, 64, 3) uint8
    frames and the (N,) float32 16 kHz speech. ``demo_dir`` defaults to the packaged demo."""
    from talkinghead.dawn.configs import GenerateOptions
    from talkinghead.demo import DEMO_DIR, PORTRAIT, SPEECH, demo_pipeline
    from talkinghead.media.audio import load_audio

    demo_dir = Path(demo_dir or DEMO_DIR)
    pipe = demo_pipeline(demo_dir, device)
    options = GenerateOptions(num_steps=steps, seed=seed, crop=False)
    result = pipe(demo_dir / PORTRAIT, demo_dir / SPEECH, options)
    return np.concatenate(list(result.frames)), load_audio(demo_dir / SPEECH)
