"""Streaming on the packaged demo model: no seam at window boundaries, and ``generate --stream``."""

from __future__ import annotations

from pathlib import Path

import av
import numpy as np
import pytest
import torch

from talkinghead import cli
from talkinghead.dawn.configs import GenerateOptions
from talkinghead.dawn.streaming import StreamOptions, seam_ratio, stream_latents
from talkinghead.demo import DEMO_DIR, PORTRAIT, SPEECH, demo_pipeline

OPTIONS = GenerateOptions(num_steps=5, seed=0, crop=False)


@pytest.fixture(scope="module")
def demo():
    pipe = demo_pipeline()
    return pipe, pipe.prepare(DEMO_DIR / PORTRAIT, OPTIONS)


@pytest.mark.slow
def test_no_seam_at_window_boundaries_on_the_demo_model(demo) -> None:
    pipe, portrait = demo
    stream = StreamOptions()  # the measured defaults: windows of 60, overlap 10, look-ahead 10
    generator = torch.Generator().manual_seed(0)
    chunks = list(stream_latents(pipe, portrait, DEMO_DIR / SPEECH, OPTIONS, stream, generator))
    latents = torch.cat([c.latents for c in chunks], dim=2)[0].permute(1, 0, 2, 3)  # (F, 3, h, w)
    boundaries = [c.window.new for c in chunks[1:]]
    assert len(boundaries) == 2 and latents.shape[0] == 125
    ratio = seam_ratio(latents, boundaries)
    assert ratio < 1.5, f"frame-to-frame latent change at the seams is {ratio:.2f}x the median"


def test_seam_ratio_sees_a_jump() -> None:
    smooth = np.cumsum(np.full((60, 4), 0.1), axis=0)
    assert seam_ratio(smooth, [20, 40]) == pytest.approx(1.0)
    smooth[40:] += 1.0
    assert seam_ratio(smooth, [20, 40]) > 5


def _generate(out: Path, *flags: str) -> int:
    return cli.main(["generate", "--model", "demo", "--image", str(DEMO_DIR / PORTRAIT),
                     "--audio", str(DEMO_DIR / SPEECH), "-o", str(out), "--steps", "2",
                     "--seed", "0", "--no-crop", "-q", *flags])  # fmt: skip


@pytest.mark.parametrize("windows", [[], ["--window-frames", "24", "--overlap", "4"]])
def test_generate_stream_writes_a_complete_fragmented_mp4(tmp_path: Path, windows) -> None:
    out = tmp_path / "talk.mp4"
    assert _generate(out, "--stream", *windows) == 0
    assert sorted(p.name for p in tmp_path.iterdir()) == ["talk.mp4"]
    with av.open(str(out)) as container:
        assert container.streams.audio
        assert sum(1 for _ in container.decode(video=0)) == 125


@pytest.mark.parametrize(
    ("flags", "expected"),
    [
        (["--overlap", "4"], "--overlap applies only to --stream"),
        (["--stream", "--window-frames", "24", "--overlap", "24"], "overlap=24 must be in [0,"),
    ],
)
def test_bad_stream_windows_fail_cleanly(tmp_path: Path, capsys, flags, expected) -> None:
    assert _generate(tmp_path / "talk.mp4", *flags) == 2
    err = capsys.readouterr().err
    assert expected in err and "Traceback" not in err
    assert list(tmp_path.iterdir()) == []
