"""``talkinghead train diffused-heads`` on tiny synthetic data: the loss falls, resume is exact, the
items are what the official loader builds, and the export generates from the command line."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from safetensors.torch import load_file
from train.conftest import synth_data  # one tiny synthetic set per session

from talkinghead import cli
from talkinghead.data.layout import ClipReader
from talkinghead.diffused_heads.configs import PRESETS
from talkinghead.diffused_heads.pipeline import DiffusedHeadsPipeline
from talkinghead.diffused_heads.training import build_task, model_config
from talkinghead.diffused_heads.training_data import collate_frames
from talkinghead.media.video import probe_video
from talkinghead.train import TrainConfig, run_stage
from talkinghead.train.loop import LOG_FILE, load_checkpoint

__all__ = ["synth_data"]

STEPS = 20


def _cfg(data: Path, run_dir: Path, **kw) -> TrainConfig:
    base = {
        "steps": STEPS,
        "batch_size": 4,
        "lr": 2e-3,
        "num_repeats": 4,
        "progress": False,
        "log_every": 1,
        "ckpt_every": 10,
    }
    return TrainConfig(
        stage="diffused-heads", data=str(data), run_dir=str(run_dir), **{**base, **kw}
    )


def test_items_follow_the_official_loader(synth_data: Path, tmp_path: Path) -> None:
    task = build_task(_cfg(synth_data, tmp_path).resolve())
    dataset = task.dataset
    assert model_config("tiny", synth_data).unet == PRESETS["tiny"].unet  # the data is 32 px
    for i in range(8):
        item = dataset[i]
        target, identity = item["frame_indices"].tolist()
        reader = ClipReader(synth_data / "clips" / item["clip"])
        frames = torch.from_numpy(np.array(reader.frames)).permute(0, 3, 1, 2) / 255 * 2 - 1
        assert target != identity
        torch.testing.assert_close(item["target"], frames[target])
        torch.testing.assert_close(item["identity"], frames[identity])
        expected = [frames[identity if j < 0 else j] for j in (target - 2, target - 1)]
        torch.testing.assert_close(item["motion"], torch.cat(expected))  # oldest first
        last = reader.num_frames - 1
        rows = [min(max(j, 0), last) for j in range(target - 2, target + 3)]
        assert item["audio_index"].tolist() == rows
        assert item["audio_windows"].shape == (max(rows) + 1, 3200)
        x0, y0, x1, y1 = reader.array("mouth_box")[target]
        assert item["mouth"].tolist() == [[x0, y0], [x1, y1]]
    batch = collate_frames([dataset[i] for i in range(4)])
    lengths = batch["audio_lengths"]
    assert batch["audio_windows"].shape == (4, int(lengths.max()), 3200)
    # the joint encoder: a clip's embeddings do not depend on the padding of the others
    encoder = task.model.audio_encoder.eval()
    with torch.no_grad():
        emb = encoder.embed_windows(batch["audio_windows"], lengths)
        alone = encoder(batch["audio_windows"][:1, : lengths[0]])[0]
    torch.testing.assert_close(emb[:1, : lengths[0]], alone, atol=1e-5, rtol=0)


def test_a_few_steps_lower_the_loss(synth_data: Path, tmp_path: Path) -> None:
    losses = run_stage(_cfg(synth_data, tmp_path / "run")).losses
    assert len(losses) == STEPS
    first, last = np.mean(losses[:5]), np.mean(losses[-5:])
    assert last < 0.9 * first, (first, last)
    logged = json.loads((tmp_path / "run" / LOG_FILE).read_text().splitlines()[-1])
    assert {"simple", "vlb", "lip"} <= set(logged)
    ckpt = load_checkpoint(tmp_path / "run")
    assert ckpt["model_config"]["networks"] == ["unet", "audio_encoder"]
    assert any(k.startswith("audio_encoder.") for k in ckpt["ema"])
    assert (
        ckpt["ema"]["audio_encoder.rnn.weight_hh_l0"]
        .ne(
            build_task(_cfg(synth_data, tmp_path / "fresh").resolve()).model.state_dict()[
                "audio_encoder.rnn.weight_hh_l0"
            ]
        )
        .any()
    )  # the audio encoder trains with the UNet


def _stop_at(step: int):
    def hook(done: int, loss: float) -> None:
        if done == step:
            raise KeyboardInterrupt

    return hook


def test_resume_gives_the_same_next_loss(synth_data: Path, tmp_path: Path) -> None:
    full = run_stage(_cfg(synth_data, tmp_path / "full", steps=5, batch_size=2)).losses
    cut = _cfg(synth_data, tmp_path / "cut", steps=5, batch_size=2)
    with pytest.raises(KeyboardInterrupt):
        run_stage(cut, hooks=[_stop_at(3)])
    rest = run_stage(cut, resume=True)
    assert rest.step == 5
    torch.testing.assert_close(
        torch.tensor(rest.losses), torch.tensor(full[3:]), rtol=1e-6, atol=1e-6
    )


def test_faithful_lip_option_reaches_the_objective(synth_data: Path, tmp_path: Path) -> None:
    assert not build_task(_cfg(synth_data, tmp_path).resolve()).objective.faithful_lip
    task = build_task(_cfg(synth_data, tmp_path, faithful_lip=True).resolve())
    assert task.objective.faithful_lip


def test_v_prediction_trains_and_travels_with_the_model(synth_data: Path, tmp_path: Path) -> None:
    run, model = tmp_path / "run", tmp_path / "model"
    losses = run_stage(_cfg(synth_data, run, prediction="v")).losses
    assert np.mean(losses[-5:]) < 0.9 * np.mean(losses[:5])
    assert load_checkpoint(run)["model_config"]["diffused_heads"]["diffusion"]["prediction"] == "v"
    argv = ["train", "diffused-heads", "--out", str(run), "--steps", "0", "--export", str(model)]
    assert cli.main([*argv, "--half"]) == 0
    stored = load_file(model / "unet" / "model.safetensors")
    assert {t.dtype for t in stored.values() if t.is_floating_point()} == {torch.float16}
    pipe = DiffusedHeadsPipeline.from_pretrained(model)
    assert pipe.config.diffusion.prediction == "v"
    assert next(pipe.unet.parameters()).dtype == torch.float32
    with pytest.raises(ValueError, match="only diffused-heads trains a v-predicting UNet"):
        TrainConfig(stage="a2v", data="d", run_dir="r", prediction="v")


def test_cli_train_export_generate(synth_data: Path, tmp_path: Path) -> None:
    run, model = tmp_path / "run", tmp_path / "model"
    argv = ["train", "diffused-heads", "--data", synth_data, "--out", run, "--steps", "2"]
    argv += ["--batch-size", "2", "--no-progress", "--export", model]
    assert cli.main([str(a) for a in argv]) == 0
    pipe = DiffusedHeadsPipeline.from_pretrained(model)
    assert pipe.audio_encoder is not None and pipe.config.resolution == 32
    clip = ClipReader(min((synth_data / "clips").iterdir()))
    portrait, out = tmp_path / "face.png", tmp_path / "talk.mp4"
    cv2.imwrite(str(portrait), np.array(clip.frames[0])[:, :, ::-1])
    argv = ["generate", "--model", model, "--image", portrait, "--audio", clip.dir / "audio.wav"]
    argv += [
        "-o",
        out,
        "--sampler",
        "ancestral",
        "--num-steps",
        "7",
        "--seed",
        "0",
        "--no-crop",
        "-q",
    ]
    assert cli.main([str(a) for a in argv]) == 0
    info = probe_video(out)
    assert info["num_frames"] == clip.num_frames and info["has_audio"]
