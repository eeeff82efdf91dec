"""`talkinghead eval-synth`: plumbing on a tiny synthetic set with random tiny weights, and the
image measures' own ceilings on the real synthetic frames."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from talkinghead.data.layout import ClipReader
from talkinghead.data.synth.clips import clip_style, synthesize_clip, write_synth_dataset
from talkinghead.dawn.configs import PRESETS
from talkinghead.eval.synth_benchmark import (
    SynthBenchOptions,
    blink_onsets,
    eye_signal,
    format_table,
    mouth_opening,
    pearson,
    run_synth_benchmark,
    summarize,
)


@pytest.fixture(scope="module")
def synth_set(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("synth")
    write_synth_dataset(
        root,
        num_clips=2,
        seconds=4.0,
        resolution=128,
        voice="formant",
        video=False,
        progress=False,
        test_fraction=0.5,
    )
    return root


@pytest.fixture(scope="module")
def tiny_pipeline():
    from talkinghead.dawn.pipeline import DawnPipeline
    from talkinghead.dawn.weights import random_modules
    from talkinghead.face.analysis import FaceAnalyzer

    cfg = PRESETS["tiny"]
    return DawnPipeline(
        random_modules(cfg),
        audio_encoder=None,
        config=cfg,
        face_analyzer=FaceAnalyzer(None),
        audio_features="logmel",
    )


def test_mouth_measure_ceiling_on_real_frames(synth_set: Path) -> None:
    for clip in sorted((synth_set / "clips").iterdir()):
        reader = ClipReader(clip)
        style = clip_style(reader.info["seed"])
        measured = mouth_opening(
            np.asarray(reader.frames), np.asarray(reader.array("mouth_box")), style
        )
        assert pearson(measured, reader.array("mouth_open")) > 0.8


def test_measures_follow_the_persons_colours() -> None:
    # a dark-skinned person (clip (0, 8) of seed 0): a measure blind to the skin colour read the
    # lips covering skin as a closing mouth (correlation -0.48 on the real frames)
    clip = synthesize_clip((0, 8), 4.0, 64, voice="formant", zoom=1.5)
    opening = mouth_opening(clip.frames, clip.mouth_box, clip.style)
    assert pearson(opening, clip.mouth_open) > 0.6
    clip = synthesize_clip((0, 48), 4.0, 64, voice="formant", zoom=1.5)
    eye = eye_signal(clip.frames, clip.bbox, clip.style)
    closed = clip.blink.astype(bool)
    assert closed.any() and eye[closed].mean() < 0.5 < eye[~closed].mean()


def test_helpers() -> None:
    assert blink_onsets(np.array([1, 1, 0, 0, 1, 0, 1, 1])) == 3
    assert blink_onsets(np.zeros(0)) == 0
    assert np.isnan(pearson(np.ones(5), np.arange(5)))
    with pytest.raises(ValueError, match="width"):
        mouth_opening(np.zeros((2, 8, 8, 3), np.uint8), np.zeros((2, 4)), clip_style(0))


def test_benchmark_plumbing(synth_set: Path, tiny_pipeline, tmp_path: Path) -> None:
    summary = run_synth_benchmark(
        synth_set, tiny_pipeline, options=SynthBenchOptions(num_steps=2, pbnet=True)
    )
    assert summary["num_clips"] == 1
    row = next(iter(summary["clips"].values()))
    for key in (
        "lfg_psnr",
        "mouth_corr_real",
        "mouth_corr_gt",
        "mouth_corr_lfg",
        "mouth_corr_pbnet",
        "blink_rate_true",
        "blink_rate_real",
        "blink_rate_gt",
        "blink_rate_pbnet",
    ):
        assert key in row and key in summary["mean"]
    assert 0 < row["lfg_psnr"] < 60 and row["mouth_corr_real"] > 0.8
    assert row["blink_rate_true"] > 0
    table = format_table(summary)
    assert "goal mouth_corr >= 0.6" in table and "lfg_psnr" in table
    again = run_synth_benchmark(synth_set, tiny_pipeline, options=SynthBenchOptions(num_steps=2))
    assert again["clips"] == {
        k: {m: v for m, v in r.items() if "pbnet" not in m} for k, r in summary["clips"].items()
    }  # seeded: repeatable
    opened = run_synth_benchmark(
        synth_set, tiny_pipeline, options=SynthBenchOptions(num_steps=2, source="open")
    )
    row = next(iter(opened["clips"].values()))
    assert row["source_index"] > 0 and "source_index" not in opened["mean"]
    with pytest.raises(ValueError, match="source"):
        SynthBenchOptions(source="last")
    other = run_synth_benchmark(synth_set, tiny_pipeline, shard=(1, 2))  # the one clip is shard 0
    assert other["num_clips"] == 0
    assert summarize({**other["clips"], **opened["clips"]})["mean"] == opened["mean"]
    read_back = summarize({"a": {"mouth_corr_gt": None}, "b": {"mouth_corr_gt": 0.5}})  # JSON null
    assert read_back["mean"] == {"mouth_corr_gt": 0.5} and "nan" in format_table(read_back)


def test_rejects_sets_without_truth(tmp_path: Path, tiny_pipeline) -> None:
    with pytest.raises(ValueError, match="manifest"):
        run_synth_benchmark(tmp_path, tiny_pipeline)


def test_cli_eval_synth(synth_set: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    from talkinghead.cli import build_parser, main

    out = tmp_path / "bench.json"
    code = main(
        [
            "eval-synth",
            str(synth_set),
            "--preset",
            "tiny",
            "--steps",
            "1",
            "--device",
            "cpu",
            "--out",
            str(out),
        ]
    )
    assert code == 0
    summary = json.loads(out.read_text())
    assert summary["num_clips"] == 1 and "mouth_corr_gt" in summary["mean"]
    assert "goal lfg_psnr >= 28.0" in capsys.readouterr().out
    assert main(["eval-synth", str(synth_set)]) == 2  # no weights
    # the existing positional form of `eval` is untouched
    args = build_parser().parse_args(["eval", "some_dir"])
    assert args.generated_dir == "some_dir" and args.func.__name__ == "run_eval"
    assert build_parser().parse_args(["eval-synth", "d", "--source", "open"]).source == "open"


def test_a_video_driven_family_is_scored_on_its_revoiced_clip(synth_set: Path) -> None:
    from difftalk.conftest import FakeFaceBackend, tiny_modules

    from talkinghead.difftalk.pipeline import DiffTalkPipeline

    # the synth faces at 128 px; the fake backend's template sits on the face (landmarks only
    # have to be plausible: the scores of random weights mean nothing)
    pipe = DiffTalkPipeline(tiny_modules(), face_backend=FakeFaceBackend(64.0, 60.0, 28.0))
    options = SynthBenchOptions(num_steps=2)
    summary = run_synth_benchmark(synth_set, pipe, options=options)
    row = next(iter(summary["clips"].values()))
    assert set(row) == {"frames", "mouth_corr_real", "mouth_corr_gt", "unchanged_frames"}
    assert row["unchanged_frames"] == 0
    assert row["mouth_corr_real"] > 0.8 and -1 <= row["mouth_corr_gt"] <= 1
    table = format_table(summary)
    assert "goal mouth_corr >= 0.6" in table and "lfg_psnr" not in table
    again = run_synth_benchmark(synth_set, pipe, options=options)
    assert again["clips"] == summary["clips"]  # seeded: repeatable


def test_a_family_without_drivers_is_scored_on_speech_alone(synth_set: Path) -> None:
    from diffused_heads.tiny import random_tiny_unet

    from talkinghead.diffused_heads.audio_encoder import SDAAudioEncoder
    from talkinghead.diffused_heads.configs import PRESETS as DH_PRESETS
    from talkinghead.diffused_heads.pipeline import DiffusedHeadsPipeline
    from talkinghead.face.analysis import FaceAnalyzer

    cfg = DH_PRESETS["tiny"]
    encoder = SDAAudioEncoder(cfg.audio_encoder).eval()  # random (the UNet seeds torch first)
    pipe = DiffusedHeadsPipeline(random_tiny_unet(0), encoder, cfg, FaceAnalyzer(None))
    options = SynthBenchOptions(num_steps=2, sampler="ddim", max_clips=1)
    summary = run_synth_benchmark(synth_set, pipe, options=options)
    row = next(iter(summary["clips"].values()))
    assert set(row) == {
        "frames",
        "mouth_corr_real",
        "blink_rate_true",
        "blink_rate_real",
        "mouth_corr_gt",
        "blink_rate_gt",
    }
    assert row["mouth_corr_real"] > 0.8 and row["blink_rate_gt"] >= 0
    table = format_table(summary)
    assert "goal mouth_corr >= 0.6" in table and "lfg_psnr" not in table
    assert run_synth_benchmark(synth_set, pipe, options=options)["clips"] == summary["clips"]
    with pytest.raises(ValueError, match="sampler"):
        run_synth_benchmark(synth_set, pipe, options=SynthBenchOptions(sampler="euler"))
