"""Download (pooch), retry and safe extraction against a real HTTP server on 127.0.0.1."""

from __future__ import annotations

import hashlib
import http.server
import importlib.resources
import io
import re
import socket
import tarfile
import threading
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest

from sam2_video.data.download import (
    COCO2017,
    SAM2_CHECKPOINTS,
    SAM2_CONFIGS,
    RemoteFile,
    download,
    extract_archive,
    fetch_checkpoint,
)

# --------------------------------------------------------------------------- test server


@dataclass
class Behaviour:
    """What the server does; counters decrement as the misbehaviour is used up."""

    cut_first: int = 0  # responses that send the full Content-Length but only half the body
    fail_503: int = 0  # responses answered 503
    requests: list[tuple[str, str | None]] = field(default_factory=list)  # (path, Range)


class Handler(http.server.BaseHTTPRequestHandler):
    server: FileServer

    def log_message(self, format: str, *args: object) -> None:  # keep pytest output clean
        pass

    def do_GET(self) -> None:
        behaviour = self.server.behaviour
        behaviour.requests.append((self.path, self.headers.get("Range")))
        data = self.server.files.get(self.path)
        if data is None:
            self.send_error(404)
        elif behaviour.fail_503 > 0:
            behaviour.fail_503 -= 1
            self.send_error(503)
        else:
            self._send(data)

    def _send(self, data: bytes) -> None:
        self.send_response(200)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        if self.server.behaviour.cut_first > 0:
            self.server.behaviour.cut_first -= 1
            self.wfile.write(data[: len(data) // 2])
            self.wfile.flush()
            self.connection.shutdown(socket.SHUT_RDWR)
            self.close_connection = True
            return
        self.wfile.write(data)


class FileServer(http.server.ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), Handler)
        self.files: dict[str, bytes] = {}
        self.behaviour = Behaviour()

    def serve(self, name: str, data: bytes) -> str:
        self.files[f"/{name}"] = data
        return f"http://127.0.0.1:{self.server_address[1]}/{name}"


@pytest.fixture
def server() -> Iterator[FileServer]:
    srv = FileServer()
    thread = threading.Thread(target=srv.serve_forever, kwargs={"poll_interval": 0.05})
    thread.start()
    try:
        yield srv
    finally:
        srv.shutdown()
        srv.server_close()
        thread.join(timeout=5)


@pytest.fixture
def payload() -> bytes:
    # 3 MiB + a bit: several read chunks, and an odd length so halves are not aligned.
    return (
        np.random.default_rng(0).integers(0, 256, size=3 * 2**20 + 12345, dtype=np.uint8).tobytes()
    )


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def fast(**overrides: object) -> dict[str, object]:
    """Keyword arguments that keep a test quick and quiet."""
    return {"progress": False, "timeout_s": 5, "sleep": lambda _: None, **overrides}


# --------------------------------------------------------------------------- download


def test_full_download_verifies_and_renames(server, payload, tmp_path):
    url = server.serve("model.pt", payload)
    dest = tmp_path / "sub" / "model.pt"
    assert download(url, dest, sha256=sha256(payload), progress=True, timeout_s=5) == dest
    assert dest.read_bytes() == payload
    assert [p.name for p in dest.parent.iterdir()] == ["model.pt"]  # no temp file left
    assert server.behaviour.requests == [("/model.pt", None)]


def test_md5_is_accepted_like_coco_publishes(server, payload, tmp_path):
    url = server.serve("val2017.zip", payload)
    dest = download(url, tmp_path / "val2017.zip", md5=hashlib.md5(payload).hexdigest(), **fast())
    assert dest.read_bytes() == payload


def test_checksum_mismatch_raises_and_leaves_nothing(server, payload, tmp_path):
    url = server.serve("model.pt", payload)
    dest = tmp_path / "model.pt"
    wrong = "0" * 64
    with pytest.raises(ValueError) as err:
        download(url, dest, sha256=wrong, **fast())
    message = str(err.value)
    assert url in message and wrong in message and sha256(payload) in message
    assert "run again" in message.lower() and "\n" not in message
    assert sorted(tmp_path.iterdir()) == []
    assert len(server.behaviour.requests) == 1  # a wrong file is not fetched again


def test_md5_mismatch_is_refused(server, payload, tmp_path):
    url = server.serve("val2017.zip", payload)
    with pytest.raises(ValueError, match="MD5 hash"):
        download(url, tmp_path / "val2017.zip", md5="0" * 32, **fast())
    assert sorted(tmp_path.iterdir()) == []


def test_cut_mid_file_is_retried_from_byte_zero(server, payload, tmp_path):
    # pooch does not resume: the second request asks for the whole file again.
    url = server.serve("model.pt", payload)
    server.behaviour.cut_first = 1
    dest = download(url, tmp_path / "model.pt", sha256=sha256(payload), **fast())
    assert dest.read_bytes() == payload
    assert server.behaviour.requests == [("/model.pt", None), ("/model.pt", None)]


def test_cut_is_caught_without_a_checksum(server, payload, tmp_path):
    # Only the Content-Length check can see the short body here: no hash to catch it.
    url = server.serve("model.pt", payload)
    server.behaviour.cut_first = 1
    dest = download(url, tmp_path / "model.pt", allow_unverified=True, **fast())
    assert dest.read_bytes() == payload
    assert len(server.behaviour.requests) == 2


def test_failed_download_leaves_dest_as_it_was(server, payload, tmp_path):
    url = server.serve("model.pt", payload)
    server.behaviour.cut_first = 100
    dest = tmp_path / "model.pt"
    dest.write_bytes(b"stale")
    with pytest.raises(ConnectionError, match=r"after 2 attempts.*no partial file is kept"):
        download(url, dest, sha256=sha256(payload), retries=1, **fast())
    assert dest.read_bytes() == b"stale"  # never half of the new file
    assert [p.name for p in tmp_path.iterdir()] == ["model.pt"]


def test_503_retried_with_growing_backoff(server, payload, tmp_path):
    url = server.serve("model.pt", payload)
    server.behaviour.fail_503 = 3
    delays: list[float] = []
    dest = download(
        url,
        tmp_path / "model.pt",
        sha256=sha256(payload),
        backoff_s=0.5,
        **fast(sleep=delays.append),
    )
    assert dest.read_bytes() == payload
    assert delays == [0.5, 1.0, 2.0]
    assert len(server.behaviour.requests) == 4


def test_retries_exhausted_raises_connection_error(server, payload, tmp_path):
    url = server.serve("model.pt", payload)
    server.behaviour.fail_503 = 100
    delays: list[float] = []
    with pytest.raises(ConnectionError, match=r"after 3 attempts.*503"):
        download(
            url,
            tmp_path / "model.pt",
            sha256=sha256(payload),
            retries=2,
            **fast(sleep=delays.append),
        )
    assert delays == [1.0, 2.0]
    assert sorted(tmp_path.iterdir()) == []


def test_404_is_not_retried(server, tmp_path):
    url = server.serve("model.pt", b"x").replace("model.pt", "missing.pt")
    delays: list[float] = []
    with pytest.raises(ConnectionError, match=rf"{re.escape(url)}: server answered HTTP 404"):
        download(url, tmp_path / "missing.pt", sha256="0" * 64, **fast(sleep=delays.append))
    assert delays == [] and len(server.behaviour.requests) == 1


def test_existing_verified_dest_makes_no_request(server, payload, tmp_path):
    url = server.serve("model.pt", payload)
    dest = tmp_path / "model.pt"
    dest.write_bytes(payload)
    assert download(url, dest, sha256=sha256(payload), **fast()) == dest
    assert server.behaviour.requests == []


def test_existing_wrong_dest_is_replaced(server, payload, tmp_path):
    url = server.serve("model.pt", payload)
    dest = tmp_path / "model.pt"
    dest.write_bytes(b"stale")
    download(url, dest, sha256=sha256(payload), **fast())
    assert dest.read_bytes() == payload


def test_refuses_without_checksum_unless_allowed(server, payload, tmp_path):
    url = server.serve("model.pt", payload)
    with pytest.raises(ValueError, match="allow_unverified"):
        download(url, tmp_path / "model.pt", **fast())
    assert server.behaviour.requests == []
    dest = download(url, tmp_path / "model.pt", allow_unverified=True, **fast())
    assert dest.read_bytes() == payload


def test_refuses_two_checksums(server, payload, tmp_path):
    url = server.serve("model.pt", payload)
    with pytest.raises(ValueError, match="not both"):
        download(url, tmp_path / "m.pt", sha256=sha256(payload), md5="0" * 32, **fast())
    assert server.behaviour.requests == []


# --------------------------------------------------------------------------- extraction


def make_zip(path: Path, entries: dict[str, bytes]) -> Path:
    with zipfile.ZipFile(path, "w") as zf:
        for name, data in entries.items():
            zf.writestr(name, data)
    return path


def add_tar_entry(tf: tarfile.TarFile, name: str, data: bytes = b"", **attrs: object) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data) if attrs.get("type", tarfile.REGTYPE) == tarfile.REGTYPE else 0
    for key, value in attrs.items():
        setattr(info, key, value)
    tf.addfile(info, io.BytesIO(data) if info.size else None)


def only_target_left(tmp_path: Path, target: Path) -> None:
    """No staging directories and nothing but `target` (empty) beside the archives."""
    leftovers = [p.name for p in tmp_path.iterdir() if p.name.startswith(".tmp-")]
    assert leftovers == []
    assert list(target.iterdir()) == []


def test_zip_extraction_lands_files(tmp_path):
    archive = make_zip(
        tmp_path / "a.zip",
        {"train2017/000001.jpg": b"img1", "train2017/sub/000002.jpg": b"img2", "README": b"r"},
    )
    target = tmp_path / "coco"
    files = extract_archive(archive, target)
    assert files == [
        target / "README",
        target / "train2017/000001.jpg",
        target / "train2017/sub/000002.jpg",
    ]
    assert (target / "train2017/sub/000002.jpg").read_bytes() == b"img2"
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".tmp-")] == []


def test_second_archive_merges_and_replaces_same_top_level(tmp_path):
    target = tmp_path / "coco"
    extract_archive(make_zip(tmp_path / "img.zip", {"val2017/a.jpg": b"a"}), target)
    extract_archive(make_zip(tmp_path / "ann.zip", {"annotations/x.json": b"{}"}), target)
    extract_archive(make_zip(tmp_path / "img2.zip", {"val2017/b.jpg": b"b"}), target)
    assert sorted(p.name for p in target.iterdir()) == ["annotations", "val2017"]
    assert sorted(p.name for p in (target / "val2017").iterdir()) == ["b.jpg"]


def test_zip_with_parent_escape_is_refused(tmp_path):
    archive = make_zip(tmp_path / "evil.zip", {"ok.txt": b"fine", "../evil": b"pwned"})
    target = tmp_path / "out"
    with pytest.raises(ValueError, match=r"'\.\./evil'"):
        extract_archive(archive, target)
    assert not (tmp_path / "evil").exists()
    only_target_left(tmp_path, target)


def test_zip_with_absolute_entry_is_refused(tmp_path):
    info = zipfile.ZipInfo("ok.txt")
    with zipfile.ZipFile(tmp_path / "abs.zip", "w") as zf:
        zf.writestr(info, b"fine")
        bad = zipfile.ZipInfo("x")
        bad.filename = "/tmp/evil-abs"  # ZipInfo() strips a leading "/", a crafted file need not
        zf.writestr(bad, b"pwned")
    with pytest.raises(ValueError, match="/tmp/evil-abs"):
        extract_archive(tmp_path / "abs.zip", tmp_path / "out")
    only_target_left(tmp_path, tmp_path / "out")


def test_corrupt_zip_member_leaves_nothing(tmp_path):
    data = b"A" * 5000
    archive = make_zip(tmp_path / "c.zip", {"d/first.bin": b"ok", "d/second.bin": data})
    raw = bytearray(archive.read_bytes())
    at = raw.index(data)
    raw[at : at + 10] = b"B" * 10  # stored (uncompressed) member: CRC check fails on read
    archive.write_bytes(bytes(raw))
    with pytest.raises(ValueError, match=r"c\.zip: corrupt or unsafe archive .*second\.bin"):
        extract_archive(archive, tmp_path / "out")
    only_target_left(tmp_path, tmp_path / "out")


def test_tar_gz_extraction_with_inner_symlink(tmp_path):
    archive = tmp_path / "a.tar.gz"
    with tarfile.open(archive, "w:gz") as tf:
        add_tar_entry(tf, "pkg/data.bin", b"payload")
        add_tar_entry(tf, "pkg/link", type=tarfile.SYMTYPE, linkname="data.bin")
    files = extract_archive(archive, tmp_path / "out")
    assert files == [tmp_path / "out/pkg/data.bin", tmp_path / "out/pkg/link"]
    assert (tmp_path / "out/pkg/link").read_bytes() == b"payload"


@pytest.mark.parametrize(
    ("name", "attrs"),
    [
        ("/tmp/evil-abs-tar", {}),
        ("a/../../evil", {}),
        ("link", {"type": tarfile.SYMTYPE, "linkname": "../outside"}),
        ("deep/link", {"type": tarfile.SYMTYPE, "linkname": "../../outside"}),
        ("link", {"type": tarfile.SYMTYPE, "linkname": "/etc/passwd"}),
        ("hard", {"type": tarfile.LNKTYPE, "linkname": "../outside"}),
        ("fifo", {"type": tarfile.FIFOTYPE}),
    ],
)
def test_tar_escapes_are_refused(tmp_path, name, attrs):
    archive = tmp_path / "evil.tar"
    with tarfile.open(archive, "w", format=tarfile.PAX_FORMAT) as tf:
        add_tar_entry(tf, "ok.txt", b"fine")
        add_tar_entry(tf, name, b"pwned", **attrs)
    with tarfile.open(archive) as tf:  # the archive really carries the hostile entry
        assert tf.getnames()[-1] == name
    with pytest.raises(ValueError, match=re.escape(repr(name))):
        extract_archive(archive, tmp_path / "out")
    assert not (tmp_path / "outside").exists() and not (tmp_path / "evil").exists()
    only_target_left(tmp_path, tmp_path / "out")


def test_tar_write_through_symlink_is_refused(tmp_path):
    archive = tmp_path / "evil.tar"
    with tarfile.open(archive, "w") as tf:
        add_tar_entry(tf, "here", type=tarfile.SYMTYPE, linkname=".")
        add_tar_entry(tf, "here/../escaped", b"pwned")  # lexically "escaped", really "../escaped"
    with pytest.raises(ValueError, match=r"OutsideDestinationError: 'here/\.\./escaped'"):
        extract_archive(archive, tmp_path / "out")
    assert not (tmp_path / "escaped").exists()
    only_target_left(tmp_path, tmp_path / "out")


def test_tar_symlink_chain_escape_is_refused(tmp_path):
    # Each link target looks inside on its own ("." and "b/.."), but "a" -> "./.." -> parent.
    archive = tmp_path / "evil.tar"
    with tarfile.open(archive, "w") as tf:
        add_tar_entry(tf, "b", type=tarfile.SYMTYPE, linkname=".")
        add_tar_entry(tf, "a", type=tarfile.SYMTYPE, linkname="b/..")
    with pytest.raises(ValueError, match=r"LinkOutsideDestinationError: 'a'"):
        extract_archive(archive, tmp_path / "out")
    only_target_left(tmp_path, tmp_path / "out")


def test_not_an_archive_is_refused(tmp_path):
    (tmp_path / "x.zip").write_bytes(b"plain text")
    with pytest.raises(ValueError, match="neither a zip nor a tar"):
        extract_archive(tmp_path / "x.zip", tmp_path / "out")


# --------------------------------------------------------------------------- registry


def test_fetch_checkpoint_local_path(tmp_path):
    local = tmp_path / "mine.pt"
    local.write_bytes(b"weights")
    assert fetch_checkpoint(str(local), tmp_path / "ckpt") == local
    assert not (tmp_path / "ckpt").exists()


def test_fetch_checkpoint_bad_name_lists_valid_names(tmp_path):
    with pytest.raises(ValueError) as err:
        fetch_checkpoint("huge", tmp_path)
    for name in ("tiny", "small", "base_plus", "large"):
        assert name in str(err.value)


def test_fetch_checkpoint_by_name_downloads_verified(server, payload, tmp_path):
    url = server.serve("sam2.1_hiera_tiny.pt", payload)
    registry = {"tiny": RemoteFile(url, "sam2.1_hiera_tiny.pt", sha256=sha256(payload))}
    path = fetch_checkpoint("tiny", tmp_path / "ckpt", registry=registry, progress=False)
    assert path == tmp_path / "ckpt" / "sam2.1_hiera_tiny.pt"
    assert path.read_bytes() == payload


def test_registry_entries_are_well_formed():
    assert set(SAM2_CHECKPOINTS) == set(SAM2_CONFIGS) == {"tiny", "small", "base_plus", "large"}
    for name, remote in SAM2_CHECKPOINTS.items():
        assert remote.url.startswith("https://dl.fbaipublicfiles.com/segment_anything_2/092824/")
        assert remote.url.endswith("/" + remote.filename)
        assert re.fullmatch(r"[0-9a-f]{64}", remote.sha256), name
        package_config = importlib.resources.files("sam2").joinpath(SAM2_CONFIGS[name])
        assert package_config.is_file(), SAM2_CONFIGS[name]
    assert set(COCO2017) == {"annotations", "train", "val"}
    for remote in COCO2017.values():
        assert remote.url.startswith("http://images.cocodataset.org/")
        assert remote.url.endswith("/" + remote.filename)
        assert re.fullmatch(r"[0-9a-f]{32}", remote.md5)
