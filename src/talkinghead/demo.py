"""The packaged demo: a small DAWN trained on synthetic faces, a synthetic portrait and a speech clip.

``talkinghead demo`` renders ``assets/demo/portrait.png`` speaking ``assets/demo/speech.wav`` with the
model in ``assets/demo/model`` (preset "demo": 64 px, log-mel audio, so no HuBERT and no download).
The portrait and speech are one synthetic clip of a seed outside the training set
(``data.synth.synthesize_clip``; espeak-ng or the built-in formant voice), made by
``make_demo_assets``; the portrait is the clip's frame with a half-open mouth
(``data.mouth_reference``), which the model can close and open by warping. Its face box, head pose
and eye ratios are known from the renderer, so the demo needs no face detector: ``KnownFace`` hands them to the pipeline in place of ``FaceAnalyzer``.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np

from talkinghead.dawn.modules import load_dawn_modules
from talkinghead.dawn.pipeline import DawnPipeline
from talkinghead.face.analysis import FaceState
from talkinghead.model_index import read_model_index
from talkinghead.pipelines.base import ProgressBars

__all__ = [
    "DEMO_DIR",
    "KnownFace",
    "demo_pipeline",
    "make_demo_assets",
    "packaged_pipeline",
    "render_demo",
]

logger = logging.getLogger(__name__)

DEMO_DIR = Path(__file__).parent / "assets" / "demo"
MODEL_DIRNAME = "model"
PORTRAIT = "portrait.png"
SPEECH = "speech.wav"
FACE_FILE = "portrait.json"
DEMO_SEED = (0, 100_000)  # synth clips of the training set use (0, i) with small i
DEMO_ZOOM = 1.5  # the framing the demo model was trained on (talkinghead data synth --zoom)
DEMO_IDENTITIES = 8  # the demo model's training set has 8 people (scripts/train_demo_model.py)
DEMO_MOUTH_SCALE = 1.4  # ... drawn with a 1.4x mouth
# The synthetic set the packaged models train on (scripts/train_demo_model.py,
# scripts/train_difftalk_small.py; ``data.synth.clips.write_synth_dataset`` arguments)
DEMO_SET = {
    "num_clips": 240,
    "seconds": 4.0,
    "resolution": 64,
    "seed": 0,
    "zoom": DEMO_ZOOM,
    "identities": DEMO_IDENTITIES,
    "mouth_scale": DEMO_MOUTH_SCALE,
}


class KnownFace:
    """Stands in for ``data.face.FaceAnalyzer`` when the portrait's face is known in advance."""

    crop_margin = 1.0

    def __init__(self, state: FaceState) -> None:
        self.state = state

    @classmethod
    def from_json(cls, path: str | Path) -> KnownFace:
        """Read ``portrait.json``: box [x0, y0, x1, y1, score], pose (6), eye (2), size [H, W]."""
        data = json.loads(Path(path).read_text())
        h, w = data["size"]
        x0, y0, x1, y1 = data["box"][:4]
        return cls(
            FaceState(
                box=np.array(data["box"], np.float64),
                pose=np.array(data["pose"], np.float64),
                eye=np.array(data["eye"], np.float64),
                bbox_crop=np.array([x0, x1, y0, y1, h, w]).round().astype(np.int64),
                crop_box=(0, 0, w, h),
                detector="known",
            )
        )

    def analyze(self, image: np.ndarray, name: str = "the image") -> FaceState:
        h, w = self.state.crop_box[3], self.state.crop_box[2]
        if image.shape[:2] != (h, w):
            raise ValueError(
                f"{name} is {image.shape[:2]}, the known face belongs to a {h}x{w} image"
            )
        return self.state


def make_demo_assets(
    out_dir: str | Path,
    *,
    seed: tuple[int, int] = DEMO_SEED,
    seconds: float = 5.0,
    voice: str = "auto",
    zoom: float = DEMO_ZOOM,
    identities: int | None = DEMO_IDENTITIES,
    mouth_scale: float = DEMO_MOUTH_SCALE,
) -> dict[str, Path]:
    """Write the demo portrait (a half-open-mouth frame of a synthetic clip), its speech and its
    face facts.

    Args:
        out_dir: folder for ``portrait.png``, ``speech.wav`` (16 kHz int16) and ``portrait.json``.
        seed: synth seed; keep it outside the training set's ``(seed, index)`` range.
        seconds: speech length.
        voice: "auto", "espeak" or "formant" (``data.synth_voice.synthesize_speech``).
        zoom: camera framing (``data.synth.synthesize_clip``); the model's training framing.
        identities, mouth_scale: the training set's (``data.synth.clips.write_synth_dataset``): the
            demo person is one of its people, with its mouth size.

    Returns:
        name -> written path.
    """
    import cv2
    from scipy.io import wavfile

    from talkinghead.data.mouth_reference import reference_index
    from talkinghead.data.synth.clips import person_seed, synthesize_clip
    from talkinghead.data.synth.voice import SAMPLE_RATE

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    person = person_seed(tuple(seed), identities)
    clip = synthesize_clip(
        list(seed), seconds, 64, voice, zoom, style_seed=list(person), mouth_scale=mouth_scale
    )
    ref = reference_index(clip.mouth_open, clip.blink)
    frame = clip.frames[ref]
    h, w = frame.shape[:2]
    x_min, x_max, y_min, y_max = (float(v) for v in clip.bbox[ref][:4])
    face = {
        "box": [x_min, y_min, x_max, y_max, 1.0],
        "pose": [float(v) for v in clip.pose[ref]],
        "eye": [float(v) for v in clip.eye[ref]],
        "mouth_box": [float(v) for v in clip.mouth_box[ref]],
        "size": [h, w],
        "seed": list(seed),
        "style_seed": list(person),
        "mouth_scale": mouth_scale,
        "frame": ref,
        "voice": clip.voice,
    }
    paths = {"portrait": out / PORTRAIT, "speech": out / SPEECH, "face": out / FACE_FILE}
    cv2.imwrite(str(paths["portrait"]), frame[:, :, ::-1])
    pcm = np.clip(np.round(clip.audio * 32767), -32768, 32767).astype(np.int16)
    wavfile.write(paths["speech"], SAMPLE_RATE, pcm)
    paths["face"].write_text(json.dumps(face, indent=2) + "\n")
    return paths


def demo_pipeline(demo_dir: str | Path = DEMO_DIR, device: str = "cpu") -> DawnPipeline:
    """The packaged model with the packaged portrait's known face (no detector, no HuBERT)."""
    demo_dir = Path(demo_dir)
    model_dir = demo_dir / MODEL_DIRNAME
    kind = read_model_index(model_dir).audio_features
    if kind != "logmel":
        raise ValueError(f"{model_dir} needs {kind} audio features; the demo runs on log-mel only")
    return DawnPipeline(
        load_dawn_modules(model_dir, device=device),
        audio_encoder=None,
        face_analyzer=KnownFace.from_json(demo_dir / FACE_FILE),  # type: ignore[arg-type]
        audio_features="logmel",
    )


def packaged_pipeline(model: str, device: str = "cpu"):
    """The pipeline of a model that ships with talkinghead (``registry.MODELS``, ``packaged``)."""
    from talkinghead.registry import MODELS, load_pipeline

    packaged = [name for name, entry in MODELS.items() if entry.packaged]
    if model not in packaged:
        raise ValueError(f"{model!r} is not a packaged model; the demo runs {', '.join(packaged)}")
    return load_pipeline(model, device=device)


def render_demo(
    output: str | Path,
    *,
    model: str = "demo",
    seed: int = 0,
    steps: int = 20,
    demo_dir: str | Path = DEMO_DIR,
    device: str = "cpu",
    progress: bool = False,
) -> int:
    """Render the demo portrait speaking the demo speech into ``output`` (mp4 with audio), with the
    packaged DAWN (``model="demo"``) or another packaged model (``"diffused-heads-demo"``), which
    trained on the same synthetic people.

    Returns:
        the number of frames written (25 fps, as long as the speech).
    """
    from talkinghead.outputs import save_result

    demo_dir = Path(demo_dir)
    output = Path(output)
    if not output.parent.is_dir():
        raise ValueError(f"the output folder {output.parent} does not exist")
    pipe = demo_pipeline(demo_dir, device) if model == "demo" else packaged_pipeline(model, device)
    options = pipe.options_class(num_steps=steps, seed=seed, crop=False)
    speech = demo_dir / SPEECH
    callback = ProgressBars() if progress else None
    result = pipe(demo_dir / PORTRAIT, speech, options, callback=callback)
    count = save_result(result, output, audio_path=speech)
    logger.info("wrote %s (%d frames, %.2f s, seed %d)", output, count, count / result.fps, seed)
    return count
