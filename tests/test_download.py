"""download.py offline: which files are fetched, sha256 checks, errors (a fake Hub stands in)."""

from __future__ import annotations

import errno
import hashlib
import importlib
import logging
from pathlib import Path
from types import SimpleNamespace

import huggingface_hub
import huggingface_hub.errors
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

# the HTTP client huggingface_hub is built on (httpx or its successor), for its transport errors
httpx = importlib.import_module(
    huggingface_hub.errors.HfHubHTTPError.__mro__[1].__module__.split(".")[0]
)


def _not_found(repo_id: str) -> Exception:
    request = httpx.Request("GET", f"https://huggingface.co/api/models/{repo_id}/tree/main")
    response = httpx.Response(404, request=request, headers={"X-Error-Code": "RepoNotFound"})
    return huggingface_hub.errors.RepositoryNotFoundError(
        f"404 Client Error.\n\nRepository Not Found for url: {request.url}.", response=response
    )


# each way a download fails -> the words the one-sentence error must contain
FAILURES = {
    "no network": (
        lambda repo: httpx.ConnectError("[Errno -3] Temporary failure in name resolution"),
        "cannot reach the Hugging Face Hub",
    ),
    "proxy": (
        lambda repo: httpx.ProxyError("407 Proxy Authentication Required"),
        "the proxy refused the connection",
    ),
    "missing repo": (_not_found, "was not found on the Hugging Face Hub (HTTP 404)"),
    "full disk": (
        lambda repo: OSError(errno.ENOSPC, "No space left on device"),
        "is full",
    ),
    "interrupted": (
        lambda repo: httpx.RemoteProtocolError(
            "peer closed connection without sending complete message body"
        ),
        "was interrupted (RemoteProtocolError); run the same command again",
    ),
}


class FakeHub:
    """Stands in for huggingface_hub.list_repo_tree / snapshot_download; records every request."""

    def __init__(self, corrupt: str | None = None) -> None:
        self.repos = {download.DAWN_REPO: DAWN_FILES, download.HUBERT_REPO: HUBERT_FILES}
        self.listed: list[tuple[str, str | None]] = []
        self.snapshots: list[dict] = []
        self.corrupt = corrupt
        # fail_in: "list_repo_tree" or "snapshot_download"; fail_with: repo_id -> exception
        self.fail_in: str | None = None
        self.fail_with = None

    def _maybe_fail(self, where: str, repo_id: str) -> None:
        if self.fail_in == where:
            # the real client logs a warning per retry before it gives up
            for attempt in range(1, 6):
                logging.getLogger("huggingface_hub.utils._http").warning(
                    "Retrying in 1s [Retry %d/5].", attempt
                )
            raise self.fail_with(repo_id)

    def list_repo_tree(self, repo_id, path_in_repo=None, *, recursive=False, revision=None, **kw):
        assert recursive
        self._maybe_fail("list_repo_tree", repo_id)
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
        self._maybe_fail("snapshot_download", repo_id)
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


@pytest.mark.parametrize("where", ["list_repo_tree", "snapshot_download"])
@pytest.mark.parametrize("failure", sorted(FAILURES))
def test_download_failure_is_one_sentence(fake_hub, tmp_path, capsys, caplog, failure, where):
    make_error, words = FAILURES[failure]
    fake_hub.fail_in, fake_hub.fail_with = where, make_error
    caplog.set_level(logging.DEBUG)
    with pytest.raises(
        download.DownloadError, match=words.replace("(", r"\(").replace(")", r"\)")
    ) as info:
        download.download_official(tmp_path, hubert=False)
    message = str(info.value)
    assert "\n" not in message and message.endswith(".")
    assert any(
        hint in message for hint in ("--weights DIR", "run the same command again", "--dest")
    )
    # huggingface_hub's retry chatter is silenced; our one sentence says it all
    assert "Retrying" not in caplog.text and "Retrying" not in capsys.readouterr().err


@pytest.mark.parametrize("failure", sorted(FAILURES))
def test_cli_download_failure_prints_one_line(fake_hub, tmp_path, capsys, failure):
    fake_hub.fail_in, fake_hub.fail_with = "snapshot_download", FAILURES[failure][0]
    assert cli.main(["download", "--dest", str(tmp_path), "--no-hubert"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith("talkinghead: error: ")
    assert "Traceback" not in err and "Retrying" not in err


def test_download_offline_mode_says_how(fake_hub, tmp_path):
    def offline(repo_id):
        return huggingface_hub.errors.OfflineModeIsEnabled(
            "Cannot reach https://huggingface.co: offline mode is enabled."
        )

    fake_hub.fail_in, fake_hub.fail_with = "list_repo_tree", offline
    with pytest.raises(download.DownloadError, match="HF_HUB_OFFLINE is set.*--weights DIR"):
        download.download_official(tmp_path, hubert=False)


def test_download_lets_programming_errors_through(fake_hub, tmp_path):
    fake_hub.fail_in, fake_hub.fail_with = "snapshot_download", lambda repo: TypeError("a bug")
    with pytest.raises(TypeError, match="a bug"):
        download.download_official(tmp_path, hubert=False)
