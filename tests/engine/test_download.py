"""CIFAR for the paper mode, fetched offline from a loopback HTTP server (http.server in a thread) that serves
small generated archives: a good one, a corrupted one, one cut off mid-transfer (then resumed with an HTTP
Range request), one that ignores Range, and ones whose members would leave the target folder."""

from __future__ import annotations

import hashlib
import io
import pickle
import tarfile
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import pytest
import torch

from sam_tutorial.__main__ import main
from sam_tutorial.engine import cifar
from sam_tutorial.engine.cifar import download_cifar
from sam_tutorial.engine.data import load_dataset
from sam_tutorial.engine.download import DownloadError, extract_tar, fetch, md5sum


def _pickle(n: int, seed: int) -> bytes:
    rng = np.random.default_rng(seed)
    entry = {b"data": rng.integers(0, 256, (n, 3072), dtype=np.uint8),
             b"labels": [int(v) for v in rng.integers(0, 10, n)]}
    return pickle.dumps(entry, protocol=2)


def _tar(members: dict[str, bytes], links: dict[str, str] | None = None) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
        for name, target in (links or {}).items():
            info = tarfile.TarInfo(name)
            info.type, info.linkname = tarfile.SYMTYPE, target
            tar.addfile(info)
    return buf.getvalue()


def cifar10_archive() -> bytes:
    """A CIFAR-10-shaped archive: five training batches of 3 images and a test batch of 2."""
    files = {f"cifar-10-batches-py/data_batch_{i}": _pickle(3, i) for i in range(1, 6)}
    files["cifar-10-batches-py/test_batch"] = _pickle(2, 9)
    files["cifar-10-batches-py/batches.meta"] = pickle.dumps({"label_names": list("abcdefghij")}, protocol=2)
    return _tar(files)


class Server:
    """Serves ``files[path]``, honours ``Range: bytes=N-`` unless ``ignore_range``; ``cut[path] = k``
    makes the next response for ``path`` announce the full length and close after ``k`` bytes."""

    def __init__(self) -> None:
        self.files: dict[str, bytes] = {}
        self.cut: dict[str, int] = {}
        self.ranges: list[str | None] = []
        self.ignore_range = False
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: object) -> None:  # quiet
                pass

            def do_GET(self) -> None:
                data = server.files.get(self.path)
                if data is None:
                    self.send_error(404)
                    return
                header = self.headers.get("Range")
                server.ranges.append(header)
                start = int(header.split("=")[1].rstrip("-")) if header and not server.ignore_range else 0
                if start >= len(data) and header:
                    self.send_response(416)
                    self.end_headers()
                    return
                self.send_response(206 if start else 200)
                if start:
                    self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
                self.send_header("Content-Length", str(len(data) - start))
                self.end_headers()
                body = data[start:]
                if self.path in server.cut:
                    body = body[: server.cut.pop(self.path)]
                    self.close_connection = True
                self.wfile.write(body)

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.httpd.server_address[1]}{path}"


@pytest.fixture
def server() -> Iterator[Server]:
    srv = Server()
    yield srv
    srv.httpd.shutdown()
    srv.httpd.server_close()


def _md5(data: bytes) -> str:
    return hashlib.md5(data, usedforsecurity=False).hexdigest()


def test_good_archive_is_verified_unpacked_and_loads(server: Server, tmp_path: Path) -> None:
    data = cifar10_archive()
    server.files["/c10.tgz"] = data
    where = download_cifar("cifar10", tmp_path, url=server.url("/c10.tgz"), md5=_md5(data), progress=False)
    assert where == tmp_path / "cifar-10-batches-py"
    assert not (tmp_path / "cifar-10-python.tar.gz").exists()  # the archive is deleted once unpacked
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cifar-10-batches-py"]  # no temporary leftovers
    ds = load_dataset("cifar10", root=tmp_path)
    assert ds.train[0].shape == (15, 3, 32, 32) and ds.test[0].shape == (2, 3, 32, 32)
    # the pixels are the archive's bytes, normalised: undo the normalisation and compare with batch 1
    first = pickle.loads(_pickle(3, 1))
    mean = torch.tensor(cifar.CIFAR_MEAN["cifar10"]).view(1, 3, 1, 1)
    std = torch.tensor(cifar.CIFAR_STD["cifar10"]).view(1, 3, 1, 1)
    pixels = ((ds.train[0][:3] * std + mean) * 255).round().to(torch.uint8)
    assert torch.equal(pixels.reshape(3, -1), torch.from_numpy(first[b"data"]))
    assert ds.train[1][:3].tolist() == first[b"labels"]
    requests = len(server.ranges)
    download_cifar("cifar10", tmp_path, url=server.url("/c10.tgz"), md5=_md5(data), progress=False)
    assert len(server.ranges) == requests  # already there: nothing fetched


def test_corrupted_archive_is_refused_and_deleted(server: Server, tmp_path: Path) -> None:
    data = cifar10_archive()
    corrupted = data[:100] + bytes([data[100] ^ 0xFF]) + data[101:]
    server.files["/c10.tgz"] = corrupted
    with pytest.raises(DownloadError, match="differs from the published"):
        download_cifar("cifar10", tmp_path, url=server.url("/c10.tgz"), md5=_md5(data), progress=False)
    assert list(tmp_path.iterdir()) == []  # neither the file, nor its .part, nor anything unpacked


def test_truncated_download_is_kept_and_resumed_with_range(server: Server, tmp_path: Path) -> None:
    data = cifar10_archive()
    server.files["/c10.tgz"] = data
    server.cut["/c10.tgz"] = len(data) // 2
    url, md5 = server.url("/c10.tgz"), _md5(data)
    with pytest.raises(DownloadError, match="run again to resume"):
        download_cifar("cifar10", tmp_path, url=url, md5=md5, progress=False)
    part = tmp_path / "cifar-10-python.tar.gz.part"
    assert part.read_bytes() == data[: len(data) // 2]
    assert not (tmp_path / "cifar-10-batches-py").exists()
    download_cifar("cifar10", tmp_path, url=url, md5=md5, progress=False)
    assert server.ranges == [None, f"bytes={len(data) // 2}-"]  # the second request asked for the rest only
    assert cifar.cifar_present("cifar10", tmp_path) and not part.exists()


def test_resume_restarts_when_the_server_ignores_range(server: Server, tmp_path: Path) -> None:
    data = b"0123456789" * 1000
    server.files["/f"] = data
    server.ignore_range = True
    (tmp_path / "f.part").write_bytes(b"garbage!" * 10)  # not even a prefix of the file
    out = fetch(server.url("/f"), tmp_path / "f", md5=_md5(data), progress=False)
    assert out.read_bytes() == data and server.ranges == ["bytes=80-"]


def test_complete_part_file_is_verified_without_refetching(server: Server, tmp_path: Path) -> None:
    data = b"abc" * 999
    server.files["/f"] = data
    (tmp_path / "f.part").write_bytes(data)
    assert fetch(server.url("/f"), tmp_path / "f", md5=_md5(data), progress=False).read_bytes() == data
    assert server.ranges == [f"bytes={len(data)}-"]  # answered 416: nothing left to fetch


@pytest.mark.parametrize("member", ["../evil", "/tmp/evil-absolute", "cifar-10-batches-py/../../evil"])
def test_member_outside_the_target_is_refused_before_anything_is_written(
    server: Server, tmp_path: Path, member: str
) -> None:
    data = _tar({"cifar-10-batches-py/test_batch": _pickle(2, 0), member: b"pwned"})
    server.files["/bad.tgz"] = data
    target = tmp_path / "data"
    with pytest.raises(DownloadError, match="would leave the target folder"):
        download_cifar("cifar10", target, url=server.url("/bad.tgz"), md5=_md5(data), progress=False)
    assert not (tmp_path / "evil").exists() and not Path("/tmp/evil-absolute").exists()
    assert sorted(p.name for p in target.iterdir()) == ["cifar-10-python.tar.gz"]  # verified, not unpacked


def test_links_are_refused(tmp_path: Path) -> None:
    archive = tmp_path / "a.tgz"
    archive.write_bytes(_tar({"x/file": b"1"}, links={"x/link": "/etc/passwd"}))
    with pytest.raises(DownloadError, match="is a link"):
        extract_tar(archive, tmp_path / "out")
    assert not (tmp_path / "out" / "x").exists()


def test_extraction_replaces_an_older_copy_whole(tmp_path: Path) -> None:
    archive = tmp_path / "a.tgz"
    archive.write_bytes(_tar({"x/new": b"new"}))
    (tmp_path / "out" / "x").mkdir(parents=True)
    (tmp_path / "out" / "x" / "stale").write_bytes(b"old")
    assert extract_tar(archive, tmp_path / "out") == [tmp_path / "out" / "x"]
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["x"]
    assert sorted(p.name for p in (tmp_path / "out" / "x").iterdir()) == ["new"]
    assert md5sum(tmp_path / "out" / "x" / "new") == _md5(b"new")


def test_wrong_archive_names_what_is_missing(server: Server, tmp_path: Path) -> None:
    data = _tar({"something-else/file": b"1"})
    server.files["/other.tgz"] = data
    with pytest.raises(DownloadError, match="lacks data_batch_1"):
        download_cifar("cifar10", tmp_path, url=server.url("/other.tgz"), md5=_md5(data), progress=False)


def test_unreachable_server_is_one_clear_error(tmp_path: Path) -> None:
    with pytest.raises(DownloadError, match="cannot connect"):
        fetch("http://127.0.0.1:9/nothing", tmp_path / "f", md5="0" * 32, progress=False, timeout=5)


def test_cli_fetches_and_says_where(server: Server, tmp_path: Path, monkeypatch, capsys) -> None:
    data = cifar10_archive()
    server.files["/c10.tgz"] = data
    monkeypatch.setitem(cifar._CIFAR["cifar10"], "url", server.url("/c10.tgz"))
    monkeypatch.setitem(cifar._CIFAR["cifar10"], "md5", _md5(data))
    assert main(["data", "cifar10", "--data-root", str(tmp_path), "--no-progress"]) == 0
    assert capsys.readouterr().out.strip() == (
        f"cifar10: downloaded, checksum verified, unpacked into {tmp_path / 'cifar-10-batches-py'}")
    assert main(["data", "cifar10", "--data-root", str(tmp_path), "--no-progress"]) == 0
    assert capsys.readouterr().out.startswith("cifar10: already in ")
    monkeypatch.setitem(cifar._CIFAR["cifar10"], "md5", "0" * 32)
    assert main(["data", "cifar10", "--data-root", str(tmp_path / "other"), "--no-progress"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1 and "differs from the published" in err



def test_cli_refuses_a_data_root_that_is_a_file(tmp_path: Path, capsys) -> None:
    (tmp_path / "f").write_text("")
    assert main(["data", "cifar10", "--data-root", str(tmp_path / "f"), "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: --data-root") and err.count("\n") == 1
