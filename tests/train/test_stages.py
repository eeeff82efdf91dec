"""The three trainers on tiny synthetic data: losses fall, checkpoints hold what they should, the
curriculum varies clip lengths, exports load into the generation pipeline, the CLI runs."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from talkinghead.cli import main
from talkinghead.data.layout import ClipReader
from talkinghead.dawn.configs import PRESETS, GenerateOptions
from talkinghead.dawn.modules import load_dawn_modules
from talkinghead.dawn.motion import Motion
from talkinghead.dawn.pipeline import DawnPipeline
from talkinghead.dawn.training.a2v import build_task as build_a2v_task
from talkinghead.dawn.training.lfg import augment_pair
from talkinghead.dawn.training.lfg import build_task as build_lfg_task
from talkinghead.dawn.training.losses import (
    VGG19Features,
    mouth_mask,
    region_box_loss,
    region_separation,
)
from talkinghead.dawn.weights import resolve_weights
from talkinghead.eval.synth_benchmark import ground_truth_face
from talkinghead.train import TrainConfig, export_run, run_stage
from talkinghead.train.config import STAGE_DEFAULTS
from talkinghead.train.loop import CHECKPOINT, LOG_FILE, load_checkpoint

STEPS = 25


def _cfg(stage: str, data: Path, run_dir: Path, **kw) -> TrainConfig:
    base = {
        "steps": STEPS,
        "batch_size": 2,
        "lr": 2e-3,
        "num_repeats": 4,
        "progress": False,
        "log_every": 1,
        "ckpt_every": 10,
    }
    return TrainConfig(stage=stage, data=str(data), run_dir=str(run_dir), **{**base, **kw})


def _falls(losses: list[float], factor: float) -> None:
    first, last = np.mean(losses[:5]), np.mean(losses[-5:])
    assert len(losses) == STEPS
    assert last < factor * first, (first, last)


@pytest.fixture(scope="module")
def lfg_run(synth_data: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list]:
    run = tmp_path_factory.mktemp("lfg") / "run"
    result = run_stage(_cfg("lfg", synth_data, run, batch_size=4, sample_every=STEPS))
    return run, result.losses


@pytest.fixture(scope="module")
def pose_run(synth_data: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list]:
    run = tmp_path_factory.mktemp("pose") / "run"
    result = run_stage(_cfg("pbnet", synth_data, run, batch_size=4, clip_frames=32))
    return run, result.losses


@pytest.fixture(scope="module")
def a2v_run(
    synth_data: Path, lfg_run, tmp_path_factory: pytest.TempPathFactory
) -> tuple[Path, list]:
    run = tmp_path_factory.mktemp("a2v") / "run"
    cfg = _cfg(
        "a2v", synth_data, run, lr=1e-3, clip_frames=8, lfg=str(lfg_run[0]), sample_every=STEPS
    )
    return run, run_stage(cfg).losses


def test_lfg_loss_falls(lfg_run) -> None:
    run, losses = lfg_run
    _falls(losses, 0.6)
    assert (run / "samples" / f"lfg_{STEPS:07d}.png").is_file()


def test_pbnet_loss_falls(pose_run) -> None:
    _falls(pose_run[1], 0.3)


def test_a2v_loss_falls(a2v_run) -> None:
    run, losses = a2v_run
    _falls(losses, 0.95)
    assert (run / "samples" / f"a2v_{STEPS:07d}.png").is_file()


def test_checkpoint_contents(pose_run) -> None:
    run, _ = pose_run
    ckpt = load_checkpoint(run)
    assert {"model", "ema", "optimizer", "step", "config", "model_config", "rng"} <= set(ckpt)
    assert ckpt["step"] == STEPS
    cfg = TrainConfig.from_dict(ckpt["config"])
    assert cfg == cfg.resolve() and cfg.optimizer == STAGE_DEFAULTS["pbnet"]["optimizer"]
    assert TrainConfig.from_dict(json.loads((run / "train_config.json").read_text())) == cfg
    assert ckpt["model_config"]["networks"] == ["pose"]
    assert ckpt["model_config"]["dawn"]["pose"]["audio_dim"] == 80  # the data's log-mel width
    assert ckpt["model"].keys() == ckpt["ema"].keys()
    assert any(not torch.equal(ckpt["model"][k], ckpt["ema"][k]) for k in ckpt["model"])
    lines = [json.loads(x) for x in (run / LOG_FILE).read_text().splitlines()]
    assert [x["step"] for x in lines] == list(range(1, STEPS + 1))
    assert {"loss", "lr", "rc", "kl", "grad_norm"} <= set(lines[0])


def test_existing_run_needs_resume(pose_run, synth_data: Path) -> None:
    with pytest.raises(ValueError, match="resume"):
        run_stage(_cfg("pbnet", synth_data, pose_run[0], clip_frames=32))


def test_a2v_stage2_lengths(synth_data: Path, lfg_run, tmp_path: Path) -> None:
    cfg = _cfg(
        "a2v",
        synth_data,
        tmp_path / "s2",
        steps=6,
        curriculum=2,
        clip_frames=10,
        min_frames=4,
        lfg=str(lfg_run[0]),
    )
    assert cfg.resolve().batch_size == 2  # explicit values win over the stage-2 defaults
    run_stage(cfg)
    lines = [json.loads(x) for x in (tmp_path / "s2" / LOG_FILE).read_text().splitlines()]
    lengths = {int(x["frames"]) for x in lines}
    assert lengths <= set(range(4, 11)) and len(lengths) > 1


def test_config_defaults_and_errors(tmp_path: Path) -> None:
    s1 = TrainConfig(stage="a2v", data="d", run_dir="r").resolve()
    s2 = TrainConfig(stage="a2v", data="d", run_dir="r", curriculum=2).resolve()
    assert (s1.batch_size, s1.clip_frames, s1.lr, s1.betas) == (20, 20, 2e-4, (0.9, 0.99))
    assert (s2.batch_size, s2.clip_frames, s2.min_frames) == (40, 40, 30)
    bad_values = ({"stage": "vae"}, {"precision": "fp16"}, {"net": "eyes"}, {"curriculum": 3},
                  {"lfg_pairs": "nearest"}, {"a2v_reference": "last"})  # fmt: skip
    for bad in bad_values:
        with pytest.raises(ValueError):
            TrainConfig(**{"stage": "lfg", "data": "d", "run_dir": "r", **bad})
    with pytest.raises(ValueError, match="trained LFG"):
        run_stage(TrainConfig(stage="a2v", data="d", run_dir=str(tmp_path)))


def test_mouth_mask() -> None:
    box = torch.tensor([[[8.0, 16.0, 15.0, 20.0]]])  # x0, y0, x1, y1 at 32 px
    mask = mouth_mask(box, 32, 8)  # scale 1/4: columns 2..3, rows 4..4
    assert mask.shape == (1, 1, 1, 8, 8)
    expected = torch.zeros(8, 8)
    expected[4, 2:4] = 1
    torch.testing.assert_close(mask[0, 0, 0], expected)


def test_augment_pair_moves_the_mouth_box_with_the_frames() -> None:
    # each frame carries a bright pixel at the centre of its own mouth box; after any flip and
    # swap, the returned box must still be centred on the driving frame's bright pixel
    b, size = 64, 16
    boxes = torch.tensor([[2.0, 3.0, 5.0, 6.0], [9.0, 10.0, 14.0, 12.0]]).expand(b, 2, 4)
    frames = torch.zeros(2, b, 3, size, size)
    for k, (x0, y0, x1, y1) in enumerate(boxes[0].tolist()):
        frames[k, :, :, int((y0 + y1) / 2), int((x0 + x1) / 2)] = 1.0
    gen = torch.Generator().manual_seed(0)
    _, driving, box = augment_pair(frames[0], frames[1], gen, boxes)
    centres = torch.stack([(box[:, 0] + box[:, 2]) / 2, (box[:, 1] + box[:, 3]) / 2], 1)
    for i in range(b):
        y, x = divmod(int(driving[i, 0].argmax()), size)
        assert abs(centres[i, 0] - (x + 0.5)) <= 1 and int(centres[i, 1]) == y
    assert len({tuple(x.tolist()) for x in box}) == 4  # all four flip/swap cases were drawn
    gen = torch.Generator().manual_seed(0)
    source, _, box = augment_pair(frames[0], frames[1], gen, boxes, time_swap=False)
    assert len({tuple(x.tolist()) for x in box}) == 2  # flips only: the driving box stays
    for i in range(b):  # the source stays the source, flipped or not
        assert torch.equal(source[i], frames[0, i]) or torch.equal(source[i], frames[0, i].flip(-1))


def test_mouth_aids_reach_the_datasets(synth_data: Path, lfg_run, tmp_path: Path) -> None:
    lfg = build_lfg_task(_cfg("lfg", synth_data, tmp_path / "l", lfg_pairs="mouth").resolve())
    assert lfg.dataset.pairs == "mouth" and not lfg.objective.time_swap
    cfg = _cfg("a2v", synth_data, tmp_path / "a", lfg=str(lfg_run[0]), a2v_reference="open")
    assert build_a2v_task(cfg.resolve()).dataset.reference == "open"
    plain = _cfg("a2v", synth_data, tmp_path / "a", lfg=str(lfg_run[0]), curriculum=2)
    assert build_a2v_task(plain.resolve()).dataset.reference == "random"  # the curriculum's


def test_lfg_mouth_and_separation_terms(synth_data: Path, tmp_path: Path) -> None:
    weights = {
        "lfg_mouth_weight": 5.0,
        "lfg_separation_weight": 1.0,
        "lfg_mouth_region_weight": 1.0,
    }
    losses = run_stage(_cfg("lfg", synth_data, tmp_path / "run", steps=2, **weights))
    log = [json.loads(line) for line in (tmp_path / "run" / LOG_FILE).read_text().splitlines()]
    assert len(losses.losses) == 2
    assert all(row["mouth"] > 0 and 0 < row["separation"] <= 1 for row in log)
    assert all(row["mouth_region"] > 0 for row in log)


def test_region_box_loss_follows_the_box() -> None:
    box = torch.tensor([[16.0, 40.0, 48.0, 52.0]])  # 64 px frame: centre (32, 46), 32 x 12 px
    centre = torch.tensor([[0.0, 46 / 32 - 1]])
    sd = torch.tensor([32.0, 12.0]) / 64 / 3**0.5
    match = torch.diag(sd**2)[None]
    assert region_box_loss(centre, match, box, 64).item() == pytest.approx(0.0, abs=1e-6)
    opened = box + torch.tensor([[0.0, -4.0, 0.0, 4.0]])  # the same mouth, 8 px taller
    assert region_box_loss(centre, match, opened, 64).item() == pytest.approx(8 / 64 / 3**0.5 / 2)
    assert region_box_loss(centre + 0.1, match, box, 64).item() == pytest.approx(0.1)


def test_region_separation_pushes_collapsed_regions_apart() -> None:
    collapsed = torch.zeros(1, 3, 2, requires_grad=True)
    spread = torch.tensor([[[-0.8, 0.0], [0.0, 0.0], [0.8, 0.0]]], requires_grad=True)
    assert region_separation(collapsed, 0.1).item() == pytest.approx(1.0)
    assert region_separation(spread, 0.1).item() < 1e-6
    near = torch.tensor([[[-0.01, 0.0], [0.0, 0.0], [0.01, 0.0]]], requires_grad=True)
    region_separation(near, 0.1).backward()
    # gradient descent moves the outer regions outwards and leaves the middle one
    assert near.grad[0, 0, 0] > 0 > near.grad[0, 2, 0]
    assert near.grad[0, 1].abs().max() < 1e-6


def test_lfg_init_from_another_region_scale(
    synth_data: Path, lfg_run, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    tiny = PRESETS["tiny"]
    finer = dataclasses.replace(tiny.flow_ae, region_scale_factor=tiny.flow_ae.scale_factor * 2)
    monkeypatch.setitem(PRESETS, "tiny", dataclasses.replace(tiny, flow_ae=finer))
    cfg = _cfg("lfg", synth_data, tmp_path / "run", init_from=str(lfg_run[0]))
    lfg = build_lfg_task(cfg.resolve()).model
    init = load_checkpoint(lfg_run[0])["ema"]
    key = "region_predictor.regions.weight"
    assert torch.equal(lfg.state_dict()[key], init[key])
    heatmap = lfg.region_predictor(torch.rand(1, 3, tiny.resolution, tiny.resolution))["heatmap"]
    assert heatmap.shape[-1] == int(tiny.resolution * finer.region_scale_factor)


def test_vgg_loads_torchvision_layout() -> None:
    ref = VGG19Features()
    sd = {f"features.{k}": v.clone() for k, v in ref.features.state_dict().items()}
    sd["classifier.0.weight"] = torch.zeros(2, 2)
    sd["features.34.weight"] = torch.zeros(512, 512, 3, 3)  # past relu5_1: ignored
    vgg = VGG19Features.from_torchvision_state_dict(sd)
    feats = vgg(torch.rand(1, 3, 32, 32))
    assert [f.shape[1] for f in feats] == [64, 128, 256, 512, 512]
    del sd["features.0.weight"]
    with pytest.raises(ValueError, match="vgg19"):
        VGG19Features.from_torchvision_state_dict(sd)


def test_export_runs_in_pipeline(synth_data, lfg_run, pose_run, a2v_run, tmp_path: Path) -> None:
    blink = tmp_path / "blink"
    run_stage(_cfg("pbnet", synth_data, blink, steps=2, net="blink", clip_frames=16))
    model_dir = tmp_path / "model"
    for run in (lfg_run[0], pose_run[0], blink, a2v_run[0]):
        export_run(run, model_dir)
    assert resolve_weights(model_dir).audio_features == "logmel"
    modules = load_dawn_modules(model_dir)
    ema = load_checkpoint(a2v_run[0])["ema"]
    torch.testing.assert_close(
        modules.unet.state_dict()["init_conv.weight"], ema["unet.init_conv.weight"]
    )
    pipe = DawnPipeline(
        modules,
        audio_encoder=None,
        face_analyzer=None,  # type: ignore[arg-type]
        audio_features="logmel",
    )
    clip = ClipReader(synth_data / "clips" / "000000")
    f = 6
    options = GenerateOptions(num_steps=2, crop=False)
    portrait = pipe.prepare(np.array(clip.frames[0]), options, face=ground_truth_face(clip))
    audio = pipe.audio_condition(clip.audio()[: f * 640], f)
    zeros = np.zeros((f, 6), np.float32)
    motion = Motion(zeros, zeros[:, :2], zeros, zeros[:, :2])
    latents = pipe.sample_latents(
        portrait, audio, motion, options, torch.Generator().manual_seed(0)
    )
    frames = np.concatenate(list(pipe.decode(portrait, latents, batch_size=4)))
    assert latents.shape == (1, 3, f, 8, 8) and frames.shape == (f, 32, 32, 3)


def test_cli_train_and_export(synth_data: Path, tmp_path: Path) -> None:
    run, model = tmp_path / "run", tmp_path / "model"
    base = ["train", "pbnet", "--data", str(synth_data), "--out", str(run), "--no-progress"]
    small = ["--batch-size", "2", "--clip-frames", "16", "--num-repeats", "2"]
    args = [*base, "--steps", "2", *small]
    assert main(args) == 0
    assert main(args) == 2  # the run exists and --resume was not given
    assert main([*base, "--steps", "3", *small, "--resume", "--export", str(model)]) == 0
    assert load_checkpoint(run / CHECKPOINT)["step"] == 3
    assert (model / "pose" / "model.safetensors").is_file()


def test_a2v_init_from_a_run_or_an_exported_model(synth_data, lfg_run, a2v_run, tmp_path) -> None:
    """A fine-tune starts from the EMA weights, whether it is given the run or its export."""
    model_dir = tmp_path / "model"
    export_run(a2v_run[0], model_dir)
    ema = load_checkpoint(a2v_run[0])["ema"]
    for source in (a2v_run[0], model_dir):
        cfg = _cfg("a2v", synth_data, tmp_path / "run", clip_frames=8, lfg=str(lfg_run[0]),
                   init_from=str(source))  # fmt: skip
        state = build_a2v_task(cfg.resolve()).model.state_dict()
        assert state.keys() == ema.keys()
        for key, value in ema.items():
            torch.testing.assert_close(state[key], value, rtol=0, atol=0, msg=key)
