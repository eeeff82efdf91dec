"""``talkinghead generate`` end to end: the mp4 and its side outputs, paste-back, bad inputs (clear
one-line error, non-zero exit, no output and no temp file), and the installed entry point."""

from __future__ import annotations

import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from pipelines.conftest import (  # the tiny model and clip the pipeline tests use
    CLIP_SECONDS,
    portrait,
    speech_wav,
    tiny_model_dir,
    write_wav,
)

from talkinghead import cli
from talkinghead.media.video import probe_video

__all__ = ["portrait", "speech_wav", "tiny_model_dir"]  # fixtures, re-exported for pytest

NUM_FRAMES = math.floor(CLIP_SECONDS * 25)
ENTRY_POINT = Path(sys.executable).with_name("talkinghead")
FAST = ["--steps", "2", "--seed", "0", "--decode-batch", "8", "-q"]


def generate(*args: str | Path) -> int:
    return cli.main(["generate", *map(str, args), *FAST])


@pytest.fixture(scope="module")
def full_run(tmp_path_factory, tiny_model_dir: Path, portrait: Path, speech_wav: Path) -> Path:
    """One generation with every side output: out.mp4, out.pose.npy, out.blink.npy, frames/."""
    out = tmp_path_factory.mktemp("cli")
    code = generate(
        "--weights",
        tiny_model_dir,
        "--image",
        portrait,
        "--audio",
        speech_wav,
        "-o",
        out / "out.mp4",
        "--save-motion",
        "--save-frames",
        out / "frames",
    )
    assert code == 0
    return out


def test_mp4_has_one_frame_per_25th_second_and_matching_audio(full_run: Path) -> None:
    info = probe_video(full_run / "out.mp4")
    assert abs(info["num_frames"] - NUM_FRAMES) <= 1
    assert info["fps"] == 25
    assert (info["width"], info["height"]) == (32, 32)
    assert info["video_codec"] == "h264"
    assert info["audio_codec"] == "aac"
    assert abs(info["audio_duration"] - CLIP_SECONDS) <= 0.1
    assert abs(info["audio_duration"] - info["num_frames"] / 25) <= 0.1


def test_save_motion_and_frames(full_run: Path) -> None:
    assert np.load(full_run / "out.pose.npy").shape == (NUM_FRAMES, 6)
    assert np.load(full_run / "out.blink.npy").shape == (NUM_FRAMES, 2)
    pngs = sorted((full_run / "frames").iterdir())
    assert len(pngs) == NUM_FRAMES
    assert np.asarray(Image.open(pngs[0])).shape == (32, 32, 3)
    # nothing half-written is left beside the outputs
    assert sorted(p.name for p in full_run.iterdir()) == [
        "frames",
        "out.blink.npy",
        "out.mp4",
        "out.pose.npy",
    ]


def test_paste_back_keeps_the_original_size_and_still_head(
    tmp_path: Path, tiny_model_dir: Path, media_dir: Path, speech_wav: Path
) -> None:
    image = media_dir / "portraits" / "real_male2.jpeg"  # 427 x 427: odd, padded to even
    assert Image.open(image).size == (427, 427)
    code = generate(
        "--weights",
        tiny_model_dir,
        "--image",
        image,
        "--audio",
        speech_wav,
        "-o",
        tmp_path / "out.mp4",
        "--paste-back",
        "--still",
        "--save-motion",
        "--steps",
        "1",
    )
    assert code == 0
    info = probe_video(tmp_path / "out.mp4")
    assert (info["width"], info["height"]) == (428, 428)
    pose = np.load(tmp_path / "out.pose.npy")
    assert np.array_equal(pose, np.repeat(pose[:1], NUM_FRAMES, axis=0))  # --still


# --------------------------------------------------------------------------------- bad inputs


@pytest.fixture(scope="module")
def bad_inputs(tmp_path_factory, speech_wav: Path) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("bad")
    (root / "corrupt.jpg").write_bytes(b"\xff\xd8\xff\xe0 this is not a jpeg" * 10)
    Image.new("RGB", (256, 256), (128, 128, 128)).save(root / "grey.png")
    write_wav(root / "silent.wav", np.zeros(16000, np.float32))
    (root / "corrupt.wav").write_bytes(b"RIFF\x00\x00\x00\x00WAVEjunk" + bytes(range(256)) * 8)
    return root


# name -> (what replaces the good argument, words the error must contain)
BAD_CASES = {
    "corrupt image": ({"--image": "corrupt.jpg"}, "cannot read"),
    "no face": ({"--image": "grey.png"}, "no face found"),
    "silent audio": ({"--audio": "silent.wav"}, "silent"),
    "corrupt audio": ({"--audio": "corrupt.wav"}, "could not decode"),
    "missing weights": ({"--weights": "no-such-dir"}, "talkinghead download"),
    "unsupported resolution": ({"--resolution": "512"}, "resolution 512 is not supported"),
}


def bad_command(case: str, bad: Path, weights: Path, image: Path, audio: Path, out: Path):
    replace_args, expected = BAD_CASES[case]
    args = {"--weights": str(weights), "--image": str(image), "--audio": str(audio)}
    args.update({k: v if k == "--resolution" else str(bad / v) for k, v in replace_args.items()})
    argv = [
        "generate",
        *(x for kv in args.items() for x in kv),
        "-o",
        str(out / "out.mp4"),
        "--save-motion",
        "--save-frames",
        str(out / "frames"),
        *FAST,
    ]
    return argv, expected


def assert_one_line_error(stderr: str, expected: str) -> None:
    errors = [line for line in stderr.splitlines() if line.startswith("talkinghead: error:")]
    assert len(errors) == 1, stderr
    assert expected in errors[0], errors[0]
    assert "Traceback" not in stderr


@pytest.mark.parametrize("case", list(BAD_CASES))
def test_bad_input_fails_cleanly(
    case, tmp_path, bad_inputs, tiny_model_dir, portrait, speech_wav, capsys
) -> None:
    out = tmp_path / "out"
    out.mkdir()
    argv, expected = bad_command(case, bad_inputs, tiny_model_dir, portrait, speech_wav, out)
    assert cli.main(argv) == 2
    assert_one_line_error(capsys.readouterr().err, expected)
    assert list(out.iterdir()) == []  # no output, no temp file


def test_inputs_are_checked_before_the_weights(tmp_path, bad_inputs, portrait, capsys) -> None:
    code = generate(
        "--weights",
        tmp_path / "no-such-dir",
        "--image",
        portrait,
        "--audio",
        bad_inputs / "corrupt.wav",
        "-o",
        tmp_path / "out.mp4",
    )
    assert code == 2
    assert_one_line_error(capsys.readouterr().err, "could not decode")


def test_missing_weights_default_names_the_cache_and_command(
    tmp_path, monkeypatch, portrait, speech_wav, capsys
) -> None:
    monkeypatch.setenv("TALKINGHEAD_HOME", str(tmp_path / "home"))
    code = cli.main(
        [
            "generate",
            "--image",
            str(portrait),
            "--audio",
            str(speech_wav),
            "-o",
            str(tmp_path / "out.mp4"),
            *FAST,
        ]
    )
    assert code == 2
    err = capsys.readouterr().err
    assert_one_line_error(err, "talkinghead download")
    assert str(tmp_path / "home") in err
    assert not (tmp_path / "out.mp4").exists()


def test_incomplete_model_names_the_missing_files(
    tmp_path, tiny_model_dir, portrait, speech_wav, capsys
) -> None:
    partial = tmp_path / "partial"
    partial.mkdir()
    for entry in tiny_model_dir.iterdir():
        if entry.name != "unet":
            (partial / entry.name).symlink_to(entry)
    code = generate(
        "--weights", partial, "--image", portrait, "--audio", speech_wav, "-o", tmp_path / "out.mp4"
    )
    assert code == 2
    assert_one_line_error(capsys.readouterr().err, "unet/config.json, unet/model.safetensors")
    assert not (tmp_path / "out.mp4").exists()


# ---------------------------------------------------------------------- installed entry point


def run_entry_point(argv: list[str], home: Path) -> subprocess.CompletedProcess:
    assert ENTRY_POINT.is_file(), f"{ENTRY_POINT} is not installed (pip install -e .)"
    env = {**os.environ, "TALKINGHEAD_HOME": str(home)}
    return subprocess.run(
        [str(ENTRY_POINT), *argv], capture_output=True, text=True, env=env, timeout=300, check=False
    )


@pytest.mark.parametrize("case", ["corrupt audio", "missing weights", "unsupported resolution"])
def test_entry_point_bad_input(
    case, tmp_path, bad_inputs, tiny_model_dir, portrait, speech_wav
) -> None:
    out = tmp_path / "out"
    out.mkdir()
    argv, expected = bad_command(case, bad_inputs, tiny_model_dir, portrait, speech_wav, out)
    proc = run_entry_point(argv, tmp_path / "home")
    assert proc.returncode == 2
    assert_one_line_error(proc.stderr, expected)
    assert list(out.iterdir()) == []


def test_entry_point_smoke_preset_tiny(tmp_path, portrait, speech_wav) -> None:
    out = tmp_path / "smoke.mp4"
    proc = run_entry_point(
        [
            "generate",
            "--preset",
            "tiny",
            "--image",
            str(portrait),
            "--audio",
            str(speech_wav),
            "-o",
            str(out),
            *FAST,
        ],
        tmp_path / "home",
    )
    assert proc.returncode == 0, proc.stderr
    info = probe_video(out)
    assert abs(info["num_frames"] - NUM_FRAMES) <= 1
    assert info["has_audio"]
    assert "seed 0" in proc.stderr
