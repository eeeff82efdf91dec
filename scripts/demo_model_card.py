"""Pictures for the demo model card: does the packaged demo talk?

Renders the packaged portrait speaking the packaged speech with the packaged model (as
``talkinghead demo``: PBNet pose and blinks, 20 DDIM steps, seed 0; ``eval.demo_mouth``) and
writes, next to ``MODEL_CARD.md`` in ``assets/demo/card/``:

* ``mouth_strip.png``: the portrait, then the generated frames with the most open and the most
  closed mouth (3x, nearest neighbour);
* ``mouth_vs_speech.png``: the generated mouth opening against the speech envelope over the clip,
  with their correlation; needs matplotlib (``pip install -e '.[bench]'``).

Prints the correlation (the shipped-model test's MIN_CORR, ``tests/test_demo_talks.py``, is set
from it with margin). Usage: ``python scripts/demo_model_card.py [--steps 20] [--seed 0]``.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
NUM_SHOWN = 4  # frames per row of the strip
UPSCALE = 3


def strip(frames: np.ndarray, opening: np.ndarray, portrait: np.ndarray) -> np.ndarray:
    """Two rows: portrait + most open frames, portrait + most closed frames (in time order).

    frames: (F, H, W, 3) uint8; opening: (F,); portrait: (H, W, 3) -> (2H, 5W, 3) x UPSCALE.
    """
    order = np.argsort(opening)
    rows = []
    for idx in (order[-NUM_SHOWN:], order[:NUM_SHOWN]):
        tiles = [portrait, *(frames[i] for i in sorted(idx))]
        rows.append(np.concatenate(tiles, axis=1))
    image = np.concatenate(rows, axis=0)
    return np.repeat(np.repeat(image, UPSCALE, 0), UPSCALE, 1)


def plot(path: Path, opening: np.ndarray, envelope: np.ndarray, corr: float) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    t = np.arange(len(opening)) / 25.0
    scaled = opening / max(float(opening.max()), 1e-6)
    fig, ax = plt.subplots(figsize=(7, 2.4), dpi=100)
    ax.plot(t, envelope, color="0.6", label="speech envelope (as a mouth opening)")
    ax.plot(t, scaled, color="C3", label="generated mouth opening (scaled to max 1)")
    ax.set_xlabel("seconds")
    ax.set_ylim(-0.05, 1.1)
    ax.set_title(f"demo clip: correlation {corr:+.2f}", fontsize=10)
    ax.legend(fontsize=8, loc="upper right")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def main() -> int:
    import cv2

    from talkinghead.demo import DEMO_DIR, PORTRAIT
    from talkinghead.eval.demo_mouth import demo_mouth, render_demo_frames

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--steps", type=int, default=20, help="DDIM steps (the demo's default)")
    p.add_argument("--seed", type=int, default=0, help="generation seed (the demo's default)")
    p.add_argument("--demo-dir", type=Path, default=DEMO_DIR, help="model/, portrait, speech")
    p.add_argument("--out", type=Path, default=None, help="folder for the PNGs (DEMO_DIR/card)")
    args = p.parse_args()
    out = args.out or args.demo_dir / "card"
    frames, audio = render_demo_frames(args.demo_dir, steps=args.steps, seed=args.seed)
    mouth = demo_mouth(frames, audio, args.demo_dir)
    out.mkdir(parents=True, exist_ok=True)
    portrait = cv2.imread(str(args.demo_dir / PORTRAIT))[:, :, ::-1]
    image = strip(frames, mouth.opening, portrait)
    cv2.imwrite(str(out / "mouth_strip.png"), image[:, :, ::-1])
    plot(out / "mouth_vs_speech.png", mouth.opening, mouth.envelope, mouth.corr)
    print(f"{len(frames)} frames; mouth opening vs speech envelope: r = {mouth.corr:+.3f}")
    print(f"wrote {out / 'mouth_strip.png'} and {out / 'mouth_vs_speech.png'}")
    return 0


if __name__ == "__main__":
    sys.path.insert(0, str(ROOT / "src"))
    sys.exit(main())
