"""DiffTalk training on a tiny prepared set: loss falls, latents are cached, resume, export loads."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from talkinghead import checkpoints
from talkinghead.data.layout import (
    ClipData,
    ClipEntry,
    Manifest,
    write_clip,
    write_manifest,
)
from talkinghead.difftalk.configs import PRESETS, DiffTalkOptions
from talkinghead.difftalk.model_dir import load_model_dir
from talkinghead.difftalk.networks import build_first_stage
from talkinghead.difftalk.pipeline import DiffTalkPipeline
from talkinghead.difftalk.training import build_task, export, reference_indices
from talkinghead.train import TrainConfig
from talkinghead.train.loop import train

from .conftest import face_landmarks

RES, FRAMES, SR = 32, 70, 16000


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Two 70-frame clips of a textured 32-px face whose 'mouth' brightness follows the audio."""
    root = tmp_path_factory.mktemp("difftalk_data")
    rng = np.random.default_rng(0)
    points = face_landmarks(16.0, 12.0, 8.0)
    entries = []
    for k in range(2):
        t = np.arange(FRAMES * SR // 25) / SR
        envelope = 0.5 + 0.5 * np.sin(2 * np.pi * (1.5 + k) * t)
        audio = (0.3 * envelope * np.sin(2 * np.pi * 200 * t)).astype(np.float32)
        frames = rng.integers(60, 200, (FRAMES, RES, RES, 3), dtype=np.uint8)
        opening = envelope[:: SR // 25][:FRAMES]
        frames[:, 18:24, 12:20] = (255 * opening)[:, None, None, None].astype(np.uint8)
        zeros = np.zeros((FRAMES, 1), np.float32)
        clip = ClipData(
            frames=frames,
            audio=audio,
            audio_features=np.zeros((FRAMES, 80), np.float32),
            pose=np.repeat(zeros, 6, 1),
            eye=np.repeat(zeros, 2, 1),
            bbox=np.repeat(zeros, 6, 1),
            mouth_box=np.repeat(zeros, 4, 1),
            extras={"landmarks": np.repeat(points[None], FRAMES, 0).astype(np.float32)},
        )
        write_clip(root / "clips", f"c{k}", clip, video=False)
        entries.append(ClipEntry(f"c{k}", FRAMES, "train"))
    write_manifest(
        root, Manifest(resolution=RES, audio_feature="logmel80", audio_dim=80, clips=entries)
    )
    return root


@pytest.fixture(scope="module")
def first_stage(tmp_path_factory: pytest.TempPathFactory) -> Path:
    cfg = PRESETS["tiny"].first_stage
    torch.manual_seed(0)
    return checkpoints.save_component(
        build_first_stage(cfg), cfg, tmp_path_factory.mktemp("vq") / "first_stage"
    )


def _cfg(data: Path, first_stage: Path, run_dir: Path, steps: int) -> TrainConfig:
    return TrainConfig(
        stage="difftalk",
        data=str(data),
        run_dir=str(run_dir),
        first_stage=str(first_stage),
        steps=steps,
        batch_size=8,
        lr=2e-3,
        grad_clip=1.0,
        num_repeats=1,
        progress=False,
        log_every=1,
        ckpt_every=10,
    ).resolve()


def test_reference_frames_are_far_from_the_target() -> None:
    refs = reference_indices(130, 60, np.random.default_rng(0))
    assert (np.abs(refs - np.arange(130)) >= 60).all()
    short = reference_indices(10, 60, np.random.default_rng(0))
    assert short.tolist() == [9] * 5 + [0] * 5  # too short: the farthest end


def test_a_few_steps_lower_the_loss_and_export_runs(
    data: Path, first_stage: Path, tmp_path: Path
) -> None:
    cfg = _cfg(data, first_stage, tmp_path / "run", 30)
    task = build_task(cfg)
    item = task.dataset[0]
    h = PRESETS["tiny"].latent_size
    assert item["latent"].shape == (3, h, h) and item["audio"].shape == (8, 16, 80)
    assert item["landmarks"].shape == (39, 2)
    cached = sorted(p.name for p in (tmp_path / "run" / "latents").iterdir())
    assert cached == ["c0.safetensors", "c1.safetensors"], "latents are cached once per clip"
    losses = train(cfg, task).losses
    assert len(losses) == 30 and all(np.isfinite(losses))
    assert np.mean(losses[-5:]) < 0.8 * np.mean(losses[:5]), (losses[:5], losses[-5:])

    out = export(tmp_path / "run", tmp_path / "model")[0]
    modules = load_model_dir(out)
    assert modules.config.audio_features == "logmel" and modules.config.image_size == 32
    from .conftest import FakeFaceBackend, face_video

    pipe = DiffTalkPipeline(modules, face_backend=FakeFaceBackend(48.0, 34.0, 20.0))
    speech = np.sin(np.arange(3200) / 10).astype(np.float32) * 0.3
    result = pipe(face_video(2), speech, DiffTalkOptions(seed=0, num_steps=2))
    assert np.concatenate(list(result.frames)).shape == (5, 72, 96, 3)


def test_resume_gives_the_same_next_losses(data: Path, first_stage: Path, tmp_path: Path) -> None:
    full = _cfg(data, first_stage, tmp_path / "full", 6)
    straight = train(full, build_task(full)).losses
    cut = _cfg(data, first_stage, tmp_path / "cut", 6)

    def stop_at_3(done: int, loss: float) -> None:
        if done == 3:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        train(cut, build_task(cut), hooks=[stop_at_3])
    rest = train(cut, build_task(cut), resume=True).losses
    torch.testing.assert_close(torch.tensor(rest), torch.tensor(straight[3:]), rtol=1e-6, atol=1e-6)


def test_add_landmarks_to_a_prepared_set(data: Path, tmp_path: Path) -> None:
    import shutil

    from talkinghead.difftalk.landmarks import add_landmarks

    from .conftest import FakeFaceBackend

    copy = tmp_path / "set"
    shutil.copytree(data, copy)
    for clip in ("c0", "c1"):
        (copy / "clips" / clip / "landmarks.npy").unlink()
    frames = np.load(copy / "clips" / "c1" / "frames.npy")
    frames[:, 0, 0] = 0  # the fake backend finds no face in c1
    np.save(copy / "clips" / "c1" / "frames.npy", frames)
    backend = FakeFaceBackend(16.0, 12.0, 8.0)
    assert add_landmarks(copy, backend) == ["c1"]
    points = np.load(copy / "clips" / "c0" / "landmarks.npy")
    assert points.shape == (FRAMES, 68, 2) and np.allclose(points[3], backend.points)
    assert not (copy / "clips" / "c1" / "landmarks.npy").exists()


def test_first_stage_training_lowers_the_loss_resumes_and_feeds_the_denoiser(
    data: Path, tmp_path: Path
) -> None:
    from talkinghead.data.synth.clips import write_synth_dataset
    from talkinghead.difftalk import vq_training

    faces = tmp_path / "synth"  # smooth faces: the noise frames of `data` cannot be compressed
    write_synth_dataset(
        faces, num_clips=2, seconds=1.0, resolution=RES, voice="formant", video=False,
        progress=False, test_fraction=0.0,
    )  # fmt: skip

    def vq_cfg(run: str, steps: int) -> TrainConfig:
        return TrainConfig(
            stage="difftalk-vq", data=str(faces), run_dir=str(tmp_path / run), steps=steps,
            batch_size=8, lr=3e-3, num_repeats=1, progress=False, log_every=1, ckpt_every=4,
        ).resolve()  # fmt: skip

    cfg = vq_cfg("vq", 24)
    task = vq_training.build_task(cfg)
    assert task.dataset[0]["image"].shape == (3, RES, RES)
    codebook = task.model.quantize.embedding.weight
    assert codebook.abs().max() > 0.1, "codebook seeded from encoder outputs, not the tiny init"
    losses = train(cfg, task).losses
    assert np.mean(losses[-4:]) < 0.7 * np.mean(losses[:4]), (losses[:4], losses[-4:])

    straight = vq_cfg("straight", 6)
    straight_losses = train(straight, vq_training.build_task(straight)).losses
    cut = vq_cfg("cut", 6)

    def stop_at_3(done: int, loss: float) -> None:
        if done == 3:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        train(cut, vq_training.build_task(cut), hooks=[stop_at_3])
    rest = train(cut, vq_training.build_task(cut), resume=True).losses
    expected = torch.tensor(straight_losses[3:])
    torch.testing.assert_close(torch.tensor(rest), expected, rtol=1e-6, atol=1e-6)

    out = vq_training.export(tmp_path / "vq", tmp_path / "vq_model")[0]
    assert out == tmp_path / "vq_model" / "first_stage"
    denoiser = _cfg(data, tmp_path / "vq_model", tmp_path / "run", 2)
    assert len(train(denoiser, build_task(denoiser)).losses) == 2
