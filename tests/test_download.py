"""download.py offline: which files are fetched, sha256 checks, errors (a fake Hub stands in)."""

from __future__ import annotations

import hashlib
from pathlib import Path
from types import SimpleNamespace

import huggingface_hub
import pytest

from talkinghead import checkpoints, cli, download

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
        self.repos = {download.DAWN_REPO: DAWN_FILES, download.HUBERT_REPO: HUBERT_FILES}
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
    dest = download.download_official(tmp_path / "official", revision="abc123")
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
    download.download_official(tmp_path, resolution=256, hubert=False)
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
        download.download_official(tmp_path, hubert=False)


def test_download_reports_files_missing_on_the_hub(fake_hub, tmp_path):
    del fake_hub.repos[download.DAWN_REPO]
    fake_hub.repos[download.DAWN_REPO] = {k: v for k, v in DAWN_FILES.items() if "blink" not in k}
    with pytest.raises(checkpoints.MissingFilesError, match="PBNet blink checkpoint"):
        download.download_official(tmp_path, hubert=False)


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
