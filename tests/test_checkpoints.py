"""checkpoints.py and the cache dir: component format round trip, strict loading errors."""

from __future__ import annotations

import hashlib

import pytest
import torch
from safetensors.torch import load_file, save_file

from talkinghead import checkpoints, registry
from talkinghead.dawn.configs import PRESETS, FlowAEConfig
from talkinghead.dawn.models.flow_autoencoder import FlowAutoencoder


@pytest.fixture()
def tiny_lfg() -> tuple[FlowAutoencoder, FlowAEConfig]:
    cfg = PRESETS["tiny"].flow_ae
    torch.manual_seed(0)
    return FlowAutoencoder(cfg).eval(), cfg


def _decode(model: torch.nn.Module, gen: torch.Generator) -> torch.Tensor:
    source = torch.rand(1, 3, 32, 32, generator=gen)
    flow = torch.rand(2, 8, 8, 2, generator=gen) * 2 - 1
    occlusion = torch.rand(2, 1, 8, 8, generator=gen)
    with torch.no_grad():
        return model.decode(source, flow, occlusion)["prediction"]


def test_cache_dir_precedence(monkeypatch, tmp_path):
    monkeypatch.setenv("TALKINGHEAD_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert registry.cache_dir() == tmp_path / "home"
    monkeypatch.delenv("TALKINGHEAD_HOME")
    assert registry.cache_dir() == tmp_path / "xdg" / "talkinghead"
    monkeypatch.delenv("XDG_CACHE_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "user"))
    assert registry.cache_dir() == tmp_path / "user" / ".cache" / "talkinghead"
    assert registry.default_model_dir("dawn-128") == registry.cache_dir() / "models" / "dawn-128"


def test_sha256_file(tmp_path):
    data = bytes(range(256)) * 5000
    (tmp_path / "f.bin").write_bytes(data)
    assert checkpoints.sha256_file(tmp_path / "f.bin", chunk_size=1000) == hashlib.sha256(data).hexdigest()


def test_save_load_round_trip(tiny_lfg, tmp_path):
    model, cfg = tiny_lfg
    meta = {"source_file": "x.pth", "source_sha256": "00", "converter_version": "1"}
    checkpoints.save_component(model, cfg, tmp_path / "flow_ae", meta)
    assert sorted(p.name for p in (tmp_path / "flow_ae").iterdir()) == [
        "config.json",
        "model.safetensors",
    ]  # no temp files left behind
    assert checkpoints.read_config(tmp_path / "flow_ae") == cfg
    assert checkpoints.read_metadata(tmp_path / "flow_ae").items() >= meta.items()

    loaded = checkpoints.load_component(tmp_path / "flow_ae")
    assert isinstance(loaded, FlowAutoencoder) and not loaded.training
    for name, tensor in [*loaded.named_parameters(), *loaded.named_buffers()]:
        assert not tensor.is_meta, name
    expected, actual = model.state_dict(), loaded.state_dict()
    assert expected.keys() == actual.keys()
    assert all(torch.equal(expected[k], actual[k]) for k in expected)
    out_a = _decode(model, torch.Generator().manual_seed(1))
    out_b = _decode(loaded, torch.Generator().manual_seed(1))
    assert torch.equal(out_a, out_b)


def test_building_for_loading_skips_only_writes_to_parameters():
    with checkpoints._SkipParameterInit():
        layer = torch.nn.Linear(3, 2)
        weight = layer.weight.detach().clone()  # whatever the uninitialised memory holds
        torch.nn.init.ones_(layer.weight)
        layer.weight.uniform_()
        layer.requires_grad_(False)
        scratch = torch.zeros(2).add_(1.0)  # not a parameter: computed as usual
    assert torch.equal(layer.weight.detach(), weight)
    assert not layer.weight.requires_grad and torch.equal(scratch, torch.ones(2))
    torch.nn.init.ones_(layer.weight)  # outside the mode, initialisation works again
    assert torch.equal(layer.weight.detach(), torch.ones(2, 3))


def test_load_component_dtype(tiny_lfg, tmp_path):
    model, cfg = tiny_lfg
    checkpoints.save_component(model, cfg, tmp_path / "c")
    loaded = checkpoints.load_component(tmp_path / "c", dtype=torch.float64)
    floats = [t for t in [*loaded.parameters(), *loaded.buffers()] if t.is_floating_point()]
    assert floats and all(t.dtype == torch.float64 for t in floats)


def test_half_stored_weights_load_as_float32(tiny_lfg, tmp_path):
    model, cfg = tiny_lfg
    checkpoints.save_component(model, cfg, tmp_path / "m" / "flow_ae", {"source_file": "x"})
    size = (tmp_path / "m" / "flow_ae" / "model.safetensors").stat().st_size
    assert checkpoints.store_half(tmp_path / "m") > 0.4 * size  # the header stays
    stored = load_file(tmp_path / "m" / "flow_ae" / "model.safetensors")
    assert {t.dtype for t in stored.values() if t.is_floating_point()} == {torch.float16}
    assert checkpoints.read_metadata(tmp_path / "m" / "flow_ae")["source_file"] == "x"
    loaded = checkpoints.load_component(tmp_path / "m" / "flow_ae")
    floats = [t for t in [*loaded.parameters(), *loaded.buffers()] if t.is_floating_point()]
    assert floats and all(t.dtype == torch.float32 for t in floats)
    for key, tensor in model.state_dict().items():  # float16 rounding, nothing else
        torch.testing.assert_close(loaded.state_dict()[key], tensor, rtol=1e-3, atol=1e-4)


def test_strict_loading_lists_missing_and_unexpected(tiny_lfg, tmp_path):
    model, cfg = tiny_lfg
    checkpoints.save_component(model, cfg, tmp_path / "c")
    weights = tmp_path / "c" / "model.safetensors"
    sd = load_file(str(weights))
    dropped = "generator.final.bias"
    del sd[dropped]
    sd["generator.not_a_layer.weight"] = torch.zeros(3)
    save_file(sd, str(weights))
    with pytest.raises(ValueError) as info:
        checkpoints.load_component(tmp_path / "c")
    message = str(info.value)
    assert "missing keys (1): " + dropped in message
    assert "unexpected keys (1): generator.not_a_layer.weight" in message


def test_strict_loading_reports_shape_mismatch(tiny_lfg, tmp_path):
    model, cfg = tiny_lfg
    checkpoints.save_component(model, cfg, tmp_path / "c")
    weights = tmp_path / "c" / "model.safetensors"
    sd = load_file(str(weights))
    sd["generator.final.bias"] = torch.zeros(7)
    save_file(sd, str(weights))
    with pytest.raises(ValueError, match=r"shape mismatches \(1\): generator\.final\.bias"):
        checkpoints.load_component(tmp_path / "c")


def test_missing_files_name_the_fetch_command(tmp_path):
    (tmp_path / "c").mkdir()
    with pytest.raises(
        checkpoints.MissingFilesError, match=r"config\.json, model\.safetensors.*talkinghead download"
    ):
        checkpoints.load_component(tmp_path / "c")
