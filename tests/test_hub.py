"""hub.py: component format round trip, strict loading errors, cache dir, offline download logic."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from types import SimpleNamespace

import huggingface_hub
import pytest
import torch
from safetensors.torch import load_file, save_file

from talkinghead import cli, hub
from talkinghead.configs import PRESETS, FlowAEConfig
from talkinghead.models.flow_autoencoder import FlowAutoencoder


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
    assert hub.cache_dir() == tmp_path / "home"
    monkeypatch.delenv("TALKINGHEAD_HOME")
    assert hub.cache_dir() == tmp_path / "xdg" / "talkinghead"
    monkeypatch.delenv("XDG_CACHE_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "user"))
    assert hub.cache_dir() == tmp_path / "user" / ".cache" / "talkinghead"
    assert hub.default_model_dir("dawn-128") == hub.cache_dir() / "models" / "dawn-128"


def test_sha256_file(tmp_path):
    data = bytes(range(256)) * 5000
    (tmp_path / "f.bin").write_bytes(data)
    assert hub.sha256_file(tmp_path / "f.bin", chunk_size=1000) == hashlib.sha256(data).hexdigest()


def test_save_load_round_trip(tiny_lfg, tmp_path):
    model, cfg = tiny_lfg
    meta = {"source_file": "x.pth", "source_sha256": "00", "converter_version": "1"}
    hub.save_component(model, cfg, tmp_path / "flow_ae", meta)
    assert sorted(p.name for p in (tmp_path / "flow_ae").iterdir()) == [
        "config.json",
        "model.safetensors",
    ]  # no temp files left behind
    assert hub.read_config(tmp_path / "flow_ae") == cfg
    assert hub.read_metadata(tmp_path / "flow_ae").items() >= meta.items()

    loaded = hub.load_component(tmp_path / "flow_ae")
    assert isinstance(loaded, FlowAutoencoder) and not loaded.training
    for name, tensor in [*loaded.named_parameters(), *loaded.named_buffers()]:
        assert not tensor.is_meta, name
    expected, actual = model.state_dict(), loaded.state_dict()
    assert expected.keys() == actual.keys()
    assert all(torch.equal(expected[k], actual[k]) for k in expected)
    out_a = _decode(model, torch.Generator().manual_seed(1))
    out_b = _decode(loaded, torch.Generator().manual_seed(1))
    assert torch.equal(out_a, out_b)


def test_load_component_dtype(tiny_lfg, tmp_path):
    model, cfg = tiny_lfg
    hub.save_component(model, cfg, tmp_path / "c")
    loaded = hub.load_component(tmp_path / "c", dtype=torch.float64)
    floats = [t for t in [*loaded.parameters(), *loaded.buffers()] if t.is_floating_point()]
    assert floats and all(t.dtype == torch.float64 for t in floats)


def test_strict_loading_lists_missing_and_unexpected(tiny_lfg, tmp_path):
    model, cfg = tiny_lfg
    hub.save_component(model, cfg, tmp_path / "c")
    weights = tmp_path / "c" / "model.safetensors"
    sd = load_file(str(weights))
    dropped = "generator.final.bias"
    del sd[dropped]
    sd["generator.not_a_layer.weight"] = torch.zeros(3)
    save_file(sd, str(weights))
    with pytest.raises(ValueError) as info:
        hub.load_component(tmp_path / "c")
    message = str(info.value)
    assert "missing keys (1): " + dropped in message
    assert "unexpected keys (1): generator.not_a_layer.weight" in message


def test_strict_loading_reports_shape_mismatch(tiny_lfg, tmp_path):
    model, cfg = tiny_lfg
    hub.save_component(model, cfg, tmp_path / "c")
    weights = tmp_path / "c" / "model.safetensors"
    sd = load_file(str(weights))
    sd["generator.final.bias"] = torch.zeros(7)
    save_file(sd, str(weights))
    with pytest.raises(ValueError, match=r"shape mismatches \(1\): generator\.final\.bias"):
        hub.load_component(tmp_path / "c")


def test_missing_files_name_the_fetch_command(tmp_path):
    (tmp_path / "c").mkdir()
    with pytest.raises(
        hub.MissingFilesError, match=r"config\.json, model\.safetensors.*talkinghead download"
    ):
        hub.load_component(tmp_path / "c")
    with pytest.raises(hub.MissingFilesError, match=r"model\.json.*talkinghead download"):
        hub.load_model_dir(tmp_path)
    hub.write_model_json(tmp_path, 128)
    with pytest.raises(
        hub.MissingFilesError, match=r"flow_ae/config\.json.*face_loc/model\.safetensors"
    ):
        hub.load_model_dir(tmp_path)


def test_model_json_is_checked(tmp_path):
    hub.write_model_json(tmp_path, 256)
    assert hub.read_model_json(tmp_path) == {
        "format": "talkinghead",
        "version": 1,
        "resolution": 256,
    }
    (tmp_path / "model.json").write_text(json.dumps({"format": "other", "version": 1}))
    with pytest.raises(ValueError, match="not a talkinghead v1 model"):
        hub.read_model_json(tmp_path)


# ------------------------------------------------------------------------------------ offline download

DAWN_FILES = {
    "DAWN_128.pth": b"unet128",
    "DAWN_256.pth": b"unet256",
    "LFG_128_1000ep.pth": b"lfg128",
    "LFG_256_400ep.pth": b"lfg256",
    "pbnet/pose/checkpoint_40000.pth.tar": b"pose",
    "pbnet/pose/opt.yaml": b"modelname: x\n",
    "pbnet/blink/checkpoint_95000.pth.tar": b"blink",
    "pbnet/blink/opt.yaml": b"modelname: y\n",
    "README.md": b"readme",
}
HUBERT_FILES = {
    "config.json": b"{}",
    "preprocessor_config.json": b"{}",
    "vocab.json": b"{}",
    "pytorch_model.bin": b"bin",
    "model.safetensors": b"st",
    "tf_model.h5": b"tf",
}
BINARY = (".pth", ".tar", ".bin", ".safetensors", ".h5")


class FakeHub:
    """Stands in for huggingface_hub.list_repo_tree / snapshot_download; records every request."""

    def __init__(self, corrupt: str | None = None) -> None:
        self.repos = {hub.DAWN_REPO: DAWN_FILES, hub.HUBERT_REPO: HUBERT_FILES}
        self.listed: list[tuple[str, str | None]] = []
        self.snapshots: list[dict] = []
        self.corrupt = corrupt

    def list_repo_tree(self, repo_id, path_in_repo=None, *, recursive=False, revision=None, **kw):
        assert recursive
        self.listed.append((repo_id, revision))
        yield SimpleNamespace(path="pbnet", tree_id="x")  # a folder: no size
        for path, data in self.repos[repo_id].items():
            lfs = None
            if path.endswith(BINARY):
                lfs = SimpleNamespace(sha256=hashlib.sha256(data).hexdigest(), size=len(data))
            yield SimpleNamespace(path=path, size=len(data), lfs=lfs)

    def snapshot_download(
        self, repo_id, *, revision=None, allow_patterns=None, local_dir=None, **kw
    ):
        self.snapshots.append(
            {
                "repo_id": repo_id,
                "revision": revision,
                "allow_patterns": allow_patterns,
                "local_dir": local_dir,
            }
        )
        for path, data in self.repos[repo_id].items():
            if allow_patterns is None or path in allow_patterns:
                target = Path(local_dir) / path
                target.parent.mkdir(parents=True, exist_ok=True)
                target.write_bytes(b"corrupt" if path == self.corrupt else data)
        return local_dir


@pytest.fixture()
def fake_hub(monkeypatch) -> FakeHub:
    fake = FakeHub()
    monkeypatch.setattr(huggingface_hub, "list_repo_tree", fake.list_repo_tree)
    monkeypatch.setattr(huggingface_hub, "snapshot_download", fake.snapshot_download)
    return fake


def test_download_official_all(fake_hub, tmp_path):
    dest = hub.download_official(tmp_path / "official", revision="abc123")
    assert dest == tmp_path / "official"
    dawn, hubert = fake_hub.snapshots
    assert dawn["repo_id"] == "Hanbo-Cheng/DAWN" and dawn["revision"] == "abc123"
    assert sorted(dawn["allow_patterns"]) == sorted(k for k in DAWN_FILES if k != "README.md")
    assert Path(dawn["local_dir"]) == dest
    assert hubert["repo_id"] == "facebook/hubert-large-ls960-ft"
    assert Path(hubert["local_dir"]) == dest / "hubert-large-ls960-ft"
    # one copy of the weights (safetensors preferred), configs, no TensorFlow file
    assert sorted(hubert["allow_patterns"]) == [
        "config.json",
        "model.safetensors",
        "preprocessor_config.json",
        "vocab.json",
    ]
    for path in dawn["allow_patterns"]:
        assert (dest / path).read_bytes() == DAWN_FILES[path]
    assert (dest / "hubert-large-ls960-ft" / "model.safetensors").is_file()


def test_download_official_one_resolution_no_hubert(fake_hub, tmp_path):
    hub.download_official(tmp_path, resolution=256, hubert=False)
    (dawn,) = fake_hub.snapshots
    assert (
        "DAWN_256.pth" in dawn["allow_patterns"] and "LFG_256_400ep.pth" in dawn["allow_patterns"]
    )
    assert not any("128" in p for p in dawn["allow_patterns"])
    assert fake_hub.listed == [("Hanbo-Cheng/DAWN", None)]


def test_download_checks_sha256(monkeypatch, tmp_path):
    fake = FakeHub(corrupt="DAWN_128.pth")
    monkeypatch.setattr(huggingface_hub, "list_repo_tree", fake.list_repo_tree)
    monkeypatch.setattr(huggingface_hub, "snapshot_download", fake.snapshot_download)
    with pytest.raises(ValueError, match=r"DAWN_128\.pth has sha256 .* but the Hub lists"):
        hub.download_official(tmp_path, hubert=False)


def test_download_reports_files_missing_on_the_hub(fake_hub, tmp_path):
    del fake_hub.repos[hub.DAWN_REPO]
    fake_hub.repos[hub.DAWN_REPO] = {k: v for k, v in DAWN_FILES.items() if "blink" not in k}
    with pytest.raises(hub.MissingFilesError, match="PBNet blink checkpoint"):
        hub.download_official(tmp_path, hubert=False)


def test_cli_download(fake_hub, tmp_path):
    code = cli.main(["download", "--dest", str(tmp_path), "--resolution", "128", "--no-hubert"])
    assert code == 0
    (dawn,) = fake_hub.snapshots
    assert "DAWN_128.pth" in dawn["allow_patterns"] and (tmp_path / "DAWN_128.pth").is_file()


def test_cli_download_error_is_one_line(monkeypatch, tmp_path, capsys):
    def offline(*args, **kwargs):
        raise OSError("Cannot reach the Hub: offline mode is enabled.\nsecond line")

    monkeypatch.setattr(huggingface_hub, "list_repo_tree", offline)
    assert cli.main(["download", "--dest", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert err.strip() == "talkinghead: error: Cannot reach the Hub: offline mode is enabled."
