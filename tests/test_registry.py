"""registry.py and families.py: models by name, the family dispatch, the generic generate flags."""

from __future__ import annotations

import argparse

import numpy as np
import pytest

from talkinghead import available_models, load_pipeline
from talkinghead.cli import main
from talkinghead.cli.flags import add_dataclass_flags, field_comments
from talkinghead.dawn.configs import GenerateOptions
from talkinghead.dawn.pipeline import DawnPipeline
from talkinghead.demo import DEMO_DIR, FACE_FILE, PORTRAIT, SPEECH, KnownFace
from talkinghead.families import FAMILIES, component_classes, get_family
from talkinghead.media.audio import load_audio
from talkinghead.pipelines.base import TalkingHeadPipeline
from talkinghead.registry import MODELS, model_path


def test_available_models_load_and_describe_themselves():
    models = available_models()
    assert {"demo", "dawn-128", "dawn-256"} <= set(models)
    assert all(desc and "\n" not in desc for desc in models.values())
    assert all(MODELS[name].family in FAMILIES for name in models)


def test_demo_loads_by_name_offline(monkeypatch, tmp_path):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("TALKINGHEAD_HOME", str(tmp_path))  # nothing cached: nothing to find there
    pipe = load_pipeline("demo")
    assert isinstance(pipe, DawnPipeline) and pipe.modules.resolution == 64
    assert pipe.options_class is GenerateOptions
    # the base class dispatches on model_index.json's family
    assert type(TalkingHeadPipeline.from_pretrained(model_path("demo"))) is DawnPipeline


def test_unknown_names_and_families_are_one_sentence():
    with pytest.raises(ValueError, match="neither a model name .*demo.* nor an existing folder"):
        load_pipeline("no-such-model")
    with pytest.raises(ValueError, match="unknown model family 'x'.*dawn"):
        get_family("x")
    with pytest.raises(ValueError, match="unknown config type"):
        component_classes("NoSuchConfig")


def test_prepared_portrait_is_analysed_and_encoded_once(monkeypatch):
    pipe = load_pipeline("demo")
    pipe.face_analyzer = KnownFace.from_json(DEMO_DIR / FACE_FILE)
    calls = {"analyze": 0, "encode": 0}
    analyze, encode = pipe.face_analyzer.analyze, pipe.modules.flow_ae.encode_source

    def count(name, fn):
        def wrapped(*args, **kwargs):
            calls[name] += 1
            return fn(*args, **kwargs)

        return wrapped

    monkeypatch.setattr(pipe.face_analyzer, "analyze", count("analyze", analyze))
    monkeypatch.setattr(pipe.modules.flow_ae, "encode_source", count("encode", encode))
    options = GenerateOptions(num_steps=1, seed=0, crop=False)
    portrait = pipe.prepare(DEMO_DIR / PORTRAIT, options)
    speech = load_audio(DEMO_DIR / SPEECH)
    clips = [speech[i * 3200 : (i + 1) * 3200] for i in range(10)]  # 10 clips of 0.2 s
    outputs = [np.concatenate(list(pipe(portrait, clip, options).frames)) for clip in clips]
    assert calls == {"analyze": 1, "encode": 1}
    assert all(o.shape == (5, 64, 64, 3) for o in outputs)
    # the same clip from the path (prepared inside the call) gives the same frames
    again = np.concatenate(list(pipe(DEMO_DIR / PORTRAIT, clips[0], options).frames))
    np.testing.assert_array_equal(again, outputs[0])


def test_progress_reaches_the_callback():
    pipe = load_pipeline("demo")
    seen: list[tuple[str, int, int]] = []
    speech = load_audio(DEMO_DIR / SPEECH)[:6400]
    options = GenerateOptions(num_steps=2, seed=0, crop=False)
    list(pipe(DEMO_DIR / PORTRAIT, speech, options, callback=lambda *a: seen.append(a)).frames)
    assert ("denoise", 1, 2) in seen and ("denoise", 2, 2) in seen
    assert seen[-1] == ("decode", 10, 10)


def test_flags_come_from_the_dataclass_comments():
    comments = field_comments(GenerateOptions)
    assert comments["num_steps"].startswith("DDIM steps")
    assert comments["sampler"].startswith("ddim (official)")  # a comment block above the field


def test_a_shared_flag_takes_every_familys_choices():
    from talkinghead.diffused_heads.options import DiffusedHeadsOptions

    parser = argparse.ArgumentParser()
    add_dataclass_flags(parser, [GenerateOptions, DiffusedHeadsOptions])
    for sampler in ("ddim", "dpmpp-2m", "ancestral"):
        assert parser.parse_args(["--sampler", sampler]).sampler == sampler
    with pytest.raises(SystemExit):
        parser.parse_args(["--sampler", "euler"])


def test_generate_needs_exactly_one_source(tmp_path, capsys):
    code = main(["generate", "--image", str(DEMO_DIR / PORTRAIT), "--audio", str(DEMO_DIR / SPEECH),
                 "-o", str(tmp_path / "x.mp4"), "--image", str(DEMO_DIR / PORTRAIT),
                 "--video", str(DEMO_DIR / SPEECH)])
    assert code == 2 and "one of them" in capsys.readouterr().err
    assert not (tmp_path / "x.mp4").exists()
