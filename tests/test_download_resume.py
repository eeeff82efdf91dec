"""An interrupted download resumes: the real huggingface_hub client against an in-process fake Hub.

The HTTP transport is replaced (no socket, no network): the Hub's tree listing, HEAD metadata and file
GETs are answered from memory, and the transfer of the big file breaks half-way.

What huggingface_hub (2.x) does, and these tests pin: a transfer that breaks is resumed within the same
run with an HTTP ``Range`` (up to five tries without progress); a run that still fails keeps every file
already complete, so running the command again fetches only what is missing. The partial file itself is
not kept across runs (huggingface_hub deletes its per-process temporary file on failure).
"""

from __future__ import annotations

import hashlib
import importlib
import json

import huggingface_hub
import huggingface_hub.constants
import huggingface_hub.errors
import huggingface_hub.file_download
import pytest

from talkinghead import download

httpx = importlib.import_module(
    huggingface_hub.errors.HfHubHTTPError.__mro__[1].__module__.split(".")[0]
)
COMMIT = "0123456789abcdef0123456789abcdef01234567"
BIG = "DAWN_128.pth"


def _dawn_files() -> dict[str, bytes]:
    files = {
        "LFG_128_1000ep.pth": b"lfg" * 100,
        "pbnet/pose/checkpoint_1.pth.tar": b"pose" * 50,
        "pbnet/pose/opt.yaml": b"a: 1\n",
        "pbnet/blink/checkpoint_1.pth.tar": b"blink" * 50,
        "pbnet/blink/opt.yaml": b"b: 2\n",
    }
    files[BIG] = bytes(range(256)) * 400  # 102,400 bytes
    return files


class _Broken(httpx.SyncByteStream):
    """Sends ``data`` up to ``stop`` bytes, then the connection drops."""

    def __init__(self, data: bytes, stop: int) -> None:
        self.data, self.stop = data, stop

    def __iter__(self):
        if self.stop:
            yield self.data[: self.stop]
        raise httpx.RemoteProtocolError(
            "peer closed connection without sending complete message body"
        )


class FakeHubServer:
    def __init__(self) -> None:
        self.files = _dawn_files()
        self.breaks = 10**6  # how many more requests for BIG break (half-way the first time)
        self.ranges: list[str | None] = []
        self.gets: list[str] = []

    def handle(self, request):
        path = request.url.path
        if path.startswith(f"/api/models/{download.DAWN_REPO}/tree/"):
            entries = [
                {
                    "type": "file",
                    "path": name,
                    "size": len(data),
                    "oid": hashlib.sha1(data).hexdigest(),
                    "lfs": {
                        "oid": hashlib.sha256(data).hexdigest(),
                        "size": len(data),
                        "pointerSize": 130,
                    },
                }
                for name, data in self.files.items()
            ]
            return httpx.Response(
                200,
                content=json.dumps(entries).encode(),
                headers={"Content-Type": "application/json"},
            )
        prefix = f"/{download.DAWN_REPO}/resolve/{COMMIT}/"
        if not path.startswith(prefix) or path[len(prefix) :] not in self.files:
            return httpx.Response(404, headers={"X-Error-Code": "EntryNotFound"})
        name = path[len(prefix) :]
        data = self.files[name]
        headers = {
            "X-Repo-Commit": COMMIT,
            "ETag": f'"{hashlib.sha256(data).hexdigest()}"',
            "Content-Length": str(len(data)),
        }
        if request.method == "HEAD":
            return httpx.Response(200, headers=headers)
        self.gets.append(name)
        if name == BIG:
            self.ranges.append(request.headers.get("Range"))
        start = (
            int(request.headers["Range"].split("=")[1].split("-")[0])
            if "Range" in request.headers
            else 0
        )
        body = data[start:]
        headers["Content-Length"] = str(len(body))
        if name == BIG and self.breaks > 0:
            self.breaks -= 1
            # half of the file on a fresh request; a resumed request breaks at once
            stop = len(data) // 2 if start == 0 else 0
            return httpx.Response(
                206 if start else 200, headers=headers, stream=_Broken(body, stop)
            )
        return httpx.Response(206 if start else 200, headers=headers, content=body)


@pytest.fixture()
def hub_server(monkeypatch):
    server = FakeHubServer()
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(huggingface_hub.file_download.time, "sleep", lambda s: None)
    # the client writes in chunks of this size; the real 10 MB would hold back the half that arrived
    monkeypatch.setattr(huggingface_hub.constants, "DOWNLOAD_CHUNK_SIZE", 1024)
    huggingface_hub.set_client_factory(
        lambda: httpx.Client(transport=httpx.MockTransport(server.handle))
    )
    yield server
    huggingface_hub.set_client_factory(huggingface_hub.utils._http.default_client_factory)


def test_broken_transfer_resumes_within_the_run(hub_server, tmp_path):
    hub_server.breaks = 1
    download.download_official(tmp_path, resolution=128, revision=COMMIT, hubert=False)
    half = len(hub_server.files[BIG]) // 2
    assert hub_server.ranges == [
        None,
        f"bytes={half}-",
    ]  # the second request asks only for the rest
    assert (tmp_path / BIG).read_bytes() == hub_server.files[BIG]  # whole, and sha256-checked


def test_failed_run_keeps_finished_files_and_the_rerun_fetches_the_rest(hub_server, tmp_path):
    dest = tmp_path / "official"
    with pytest.raises(download.DownloadError, match="interrupted.*run the same command again"):
        download.download_official(dest, resolution=128, revision=COMMIT, hubert=False)
    assert not (dest / BIG).exists()
    assert not list(dest.rglob("*.incomplete"))  # nothing half-written is left behind
    finished = sorted(name for name in hub_server.files if name != BIG)
    assert all((dest / name).is_file() for name in finished)

    hub_server.breaks = 0
    hub_server.gets.clear()
    download.download_official(dest, resolution=128, revision=COMMIT, hubert=False)
    assert hub_server.gets == [BIG]  # the files the first run finished are not fetched again
    assert (dest / BIG).read_bytes() == hub_server.files[BIG]
