"""Verified, resumable downloads, safe archive extraction, and the registry of official files.

Standard library only for the network (urllib): a download lands in `<dest>.part`, resumes
with an HTTP Range request after an interruption, retries transient failures with
exponential back-off, is checked against a pinned sha256/md5 and only then renamed onto
`dest`. Archives are checked entry by entry before anything is written, extracted into a
temporary directory beside the target and renamed into place.
"""

from __future__ import annotations

import hashlib
import http.client
import os
import posixpath
import re
import shutil
import tarfile
import tempfile
import time
import urllib.error
import urllib.request
import zipfile
import zlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from tqdm import tqdm

CHUNK_BYTES = 1 << 20
_CONTENT_RANGE = re.compile(r"bytes\s+(\d+)-(\d+)/(\d+|\*)")


@dataclass(frozen=True)
class RemoteFile:
    """One published file: where it lives and what its bytes must hash to."""

    url: str
    filename: str
    sha256: str | None = None
    md5: str | None = None
    size: int | None = None


_SAM2_BASE = "https://dl.fbaipublicfiles.com/segment_anything_2/092824"

# sha256 and byte size are the Git LFS pointers of the same files on the Hugging Face Hub:
# tiny from facebook/sam2.1-hiera-tiny (blob main/sam2.1_hiera_tiny.pt, Meta's own upload);
# all four from the mirror camenduru/sam2-1-hiera (commit cdd35a45, "thanks to facebook"),
# whose tiny digest equals Meta's. base_plus is also confirmed by Promethe-us/sam2 (commit
# d105770b) and large by datasets/phenanthra/tmp (discussion #2).
SAM2_CHECKPOINTS: dict[str, RemoteFile] = {
    "tiny": RemoteFile(
        url=f"{_SAM2_BASE}/sam2.1_hiera_tiny.pt",
        filename="sam2.1_hiera_tiny.pt",
        sha256="7402e0d864fa82708a20fbd15bc84245c2f26dff0eb43a4b5b93452deb34be69",
        size=156008466,
    ),
    "small": RemoteFile(
        url=f"{_SAM2_BASE}/sam2.1_hiera_small.pt",
        filename="sam2.1_hiera_small.pt",
        sha256="6d1aa6f30de5c92224f8172114de081d104bbd23dd9dc5c58996f0cad5dc4d38",
        size=184416285,
    ),
    "base_plus": RemoteFile(
        url=f"{_SAM2_BASE}/sam2.1_hiera_base_plus.pt",
        filename="sam2.1_hiera_base_plus.pt",
        sha256="a2345aede8715ab1d5d31b4a509fb160c5a4af1970f199d9054ccfb746c004c5",
        size=323606802,
    ),
    "large": RemoteFile(
        url=f"{_SAM2_BASE}/sam2.1_hiera_large.pt",
        filename="sam2.1_hiera_large.pt",
        sha256="2647878d5dfa5098f2f8649825738a9345572bae2d4350a2468587ece47dd318",
        size=898083611,
    ),
}

# Hydra config names inside the installed `sam2` package, for sam2.build_sam.build_sam2*.
SAM2_CONFIGS: dict[str, str] = {
    "tiny": "configs/sam2.1/sam2.1_hiera_t.yaml",
    "small": "configs/sam2.1/sam2.1_hiera_s.yaml",
    "base_plus": "configs/sam2.1/sam2.1_hiera_b+.yaml",
    "large": "configs/sam2.1/sam2.1_hiera_l.yaml",
}

# md5: PaddlePaddle/PaddleDetection ppdet/utils/download.py (DATASETS["coco"]); the same
# three values appear in many other download scripts. Byte sizes: several public download
# scripts that check the Content-Length of these exact URLs agree on them.
COCO2017: dict[str, RemoteFile] = {
    "annotations": RemoteFile(
        url="http://images.cocodataset.org/annotations/annotations_trainval2017.zip",
        filename="annotations_trainval2017.zip",
        md5="f4bbac642086de4f52a3fdda2de5fa2c",
        size=252907541,
    ),
    "train": RemoteFile(
        url="http://images.cocodataset.org/zips/train2017.zip",
        filename="train2017.zip",
        md5="cced6f7f71b7629ddf16f17bbcfab6b2",
        size=19336861798,
    ),
    "val": RemoteFile(
        url="http://images.cocodataset.org/zips/val2017.zip",
        filename="val2017.zip",
        md5="442b8da7639aecaf257c1dceb8ba8c80",
        size=815585330,
    ),
}


class _TransientError(Exception):
    """A failure worth retrying: network error, truncated body, 5xx/429 answer."""


# --------------------------------------------------------------------------- download


def download(
    url: str,
    dest: Path,
    sha256: str | None = None,
    md5: str | None = None,
    retries: int = 5,
    backoff_s: float = 1.0,
    timeout_s: float = 60,
    progress: bool = True,
    *,
    size: int | None = None,
    allow_unverified: bool = False,
    sleep: Callable[[float], None] = time.sleep,
) -> Path:
    """Download `url` to `dest`, resuming `<dest>.part`, and verify it before renaming.

    `size` (bytes, optional) lets a complete `.part` skip the network. Without any checksum
    the call is refused unless `allow_unverified=True`; then an existing `dest` is kept as is.
    """
    dest = Path(dest)
    expected = _expected_digests(url, sha256, md5, allow_unverified)
    if dest.is_file() and _digests_match(dest, expected):
        return dest
    dest.parent.mkdir(parents=True, exist_ok=True)
    part = dest.with_name(dest.name + ".part")
    if size is not None and part.is_file() and part.stat().st_size > size:
        part.unlink()  # longer than the published file: cannot be a prefix of it
    _fetch_with_retries(url, part, retries, backoff_s, timeout_s, progress, size, sleep)
    _verify_or_discard(url, part, expected)
    os.replace(part, dest)
    return dest


def _expected_digests(
    url: str, sha256: str | None, md5: str | None, allow_unverified: bool
) -> dict[str, str]:
    expected = {
        name: value.strip().lower()
        for name, value in (("sha256", sha256), ("md5", md5))
        if value is not None
    }
    if not expected and not allow_unverified:
        raise ValueError(
            f"{url}: no sha256 or md5 to verify the download against; pass the published "
            "checksum, or allow_unverified=True to accept whatever the server sends"
        )
    return expected


def _file_digests(path: Path, names: Mapping[str, str]) -> dict[str, str]:
    hashers = {name: hashlib.new(name) for name in names}
    with open(path, "rb") as f:
        while chunk := f.read(CHUNK_BYTES):
            for hasher in hashers.values():
                hasher.update(chunk)
    return {name: hasher.hexdigest() for name, hasher in hashers.items()}


def _digests_match(path: Path, expected: Mapping[str, str]) -> bool:
    return _file_digests(path, expected) == dict(expected)


def _verify_or_discard(url: str, part: Path, expected: Mapping[str, str]) -> None:
    actual = _file_digests(part, expected)
    for name, want in expected.items():
        if actual[name] != want:
            part.unlink(missing_ok=True)
            raise ValueError(
                f"{url}: {name} mismatch: expected {want}, got {actual[name]}. The download "
                "was deleted; run again to fetch it afresh. If it fails again the server "
                "sends a different file than the one pinned: check the URL and checksum, or "
                "download the file by hand and pass its local path."
            )


def _fetch_with_retries(
    url: str,
    part: Path,
    retries: int,
    backoff_s: float,
    timeout_s: float,
    progress: bool,
    size: int | None,
    sleep: Callable[[float], None],
) -> None:
    for attempt in range(retries + 1):
        try:
            _fetch_once(url, part, timeout_s, progress, size)
            return
        except _TransientError as err:
            if attempt == retries:
                raise ConnectionError(
                    f"{url}: download failed after {retries + 1} attempts (last: {err}); "
                    f"the partial file {part} was kept, run again to resume"
                ) from err
            sleep(backoff_s * 2**attempt)


def _fetch_once(url: str, part: Path, timeout_s: float, progress: bool, size: int | None) -> None:
    """One request: append to `part` from where it ends, or restart it if the server must."""
    offset = part.stat().st_size if part.is_file() else 0
    if size is not None and offset == size:
        return  # already complete; the checksum decides whether it is right
    response = _open(url, offset, timeout_s)
    if response is None:
        return  # 416: nothing left past `offset`; the checksum decides
    with response:
        offset = _resume_offset(response, part, offset)
        _copy_body(response, part, offset, progress)


def _open(url: str, offset: int, timeout_s: float) -> http.client.HTTPResponse | None:
    headers = {"Range": f"bytes={offset}-"} if offset else {}
    request = urllib.request.Request(url, headers=headers)
    try:
        return urllib.request.urlopen(request, timeout=timeout_s)
    except urllib.error.HTTPError as err:
        err.close()
        if err.code == 416 and offset:
            return None
        if err.code >= 500 or err.code == 429:
            raise _TransientError(f"HTTP {err.code} {err.reason}") from err
        raise ConnectionError(
            f"{url}: server answered HTTP {err.code} {err.reason}; check the URL, or "
            "download the file by hand and pass its local path"
        ) from err
    except (urllib.error.URLError, OSError, http.client.HTTPException) as err:
        raise _TransientError(f"{type(err).__name__}: {err}") from err


def _resume_offset(response: http.client.HTTPResponse, part: Path, offset: int) -> int:
    """Byte offset the response body starts at: `offset` for a 206, 0 when Range was ignored."""
    if response.status != 206:
        return 0
    match = _CONTENT_RANGE.match(response.headers.get("Content-Range", ""))
    start = int(match.group(1)) if match else None
    if start != offset:
        part.unlink(missing_ok=True)  # body would not line up with what we hold: start over
        raise _TransientError(f"server resumed at byte {start}, asked for {offset}")
    return offset


def _copy_body(response: http.client.HTTPResponse, part: Path, offset: int, progress: bool) -> None:
    length = response.headers.get("Content-Length")
    body_bytes = int(length) if length is not None else None
    total = offset + body_bytes if body_bytes is not None else None
    name = part.name.removesuffix(".part")
    received = 0
    with (
        open(part, "ab" if offset else "wb") as out,
        tqdm(
            total=total,
            initial=offset,
            unit="B",
            unit_scale=True,
            unit_divisor=1024,
            desc=name,
            disable=not progress,
        ) as bar,
    ):
        while chunk := _read_chunk(response):
            out.write(chunk)
            received += len(chunk)
            bar.update(len(chunk))
    # http.client returns b"" on an early close instead of raising, so count ourselves.
    if body_bytes is not None and received < body_bytes:
        raise _TransientError(f"connection closed after {received} of {body_bytes} bytes")


def _read_chunk(response: BinaryIO) -> bytes:
    try:
        return response.read(CHUNK_BYTES)
    except (OSError, http.client.HTTPException) as err:
        raise _TransientError(f"{type(err).__name__} while reading: {err}") from err


# --------------------------------------------------------------------------- registry


def fetch_file(remote: RemoteFile, dest_dir: Path, *, progress: bool = True) -> Path:
    """Download a registry entry into `dest_dir/remote.filename`, verified."""
    return download(
        remote.url,
        Path(dest_dir) / remote.filename,
        sha256=remote.sha256,
        md5=remote.md5,
        size=remote.size,
        progress=progress,
    )


def fetch_checkpoint(
    name_or_path: str,
    dest_dir: Path,
    *,
    registry: Mapping[str, RemoteFile] | None = None,
    progress: bool = True,
) -> Path:
    """A registry name (tiny/small/base_plus/large) is downloaded; a local file is returned."""
    checkpoints = SAM2_CHECKPOINTS if registry is None else registry
    if name_or_path in checkpoints:
        return fetch_file(checkpoints[name_or_path], dest_dir, progress=progress)
    path = Path(name_or_path)
    if path.is_file():
        return path
    raise ValueError(
        f"checkpoint {name_or_path!r}: not a known name ({', '.join(checkpoints)}) and no "
        f"file at {path.absolute()}; pass one of those names or the path of a local .pt file"
    )


# --------------------------------------------------------------------------- extraction


def extract_archive(archive: Path, target_dir: Path) -> list[Path]:
    """Extract a zip or tar(.gz) into `target_dir`; return the extracted files' final paths.

    Every entry is checked before anything is written. The archive is unpacked into a temp
    directory beside `target_dir`; each top-level entry is then renamed into `target_dir`
    whole (replacing one of the same name), so a failure leaves nothing half-written and
    several archives (e.g. COCO's images and annotations) can share one target.
    """
    archive, target_dir = Path(archive), Path(target_dir)
    if not archive.is_file():
        raise FileNotFoundError(f"{archive}: archive not found")
    target_dir.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".tmp-extract-{archive.name}-", dir=target_dir.parent))
    try:
        content = staging / "content"
        content.mkdir()
        try:
            _extract_checked(archive, content)
        except (zipfile.BadZipFile, tarfile.TarError, EOFError, zlib.error) as err:
            raise ValueError(
                f"{archive}: corrupt or unsafe archive ({type(err).__name__}: {err}); "
                "delete it and fetch it again from the official source"
            ) from err
        files = _relative_files(content)
        _move_entries(content, target_dir, staging / "replaced")
        return [target_dir / rel for rel in files]
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def _extract_checked(archive: Path, dest: Path) -> None:
    if zipfile.is_zipfile(archive):
        with zipfile.ZipFile(archive) as zf:
            for info in zf.infolist():
                _check_inside(archive, info.filename, info.filename)
            # zipfile writes symlink entries as plain files holding the link text, so a zip
            # cannot plant a link that later writes follow.
            zf.extractall(dest)
    elif tarfile.is_tarfile(archive):
        with tarfile.open(archive, "r:*") as tf:
            members = tf.getmembers()
            _check_tar_members(archive, members)
            # The "data" filter re-checks every path against the real filesystem as it goes.
            tf.extractall(dest, members=members, filter="data")
    else:
        raise ValueError(f"{archive}: neither a zip nor a tar archive; cannot extract it")


def _check_inside(archive: Path, entry: str, path: str) -> str:
    """Lexically normalised `path`; ValueError naming `entry` if it leaves the target."""
    unified = path.replace("\\", "/")
    normal = posixpath.normpath(unified)
    is_absolute = unified.startswith("/") or re.match(r"[A-Za-z]:", unified) is not None
    if is_absolute or normal == ".." or normal.startswith("../"):
        raise ValueError(
            f"{archive}: entry {entry!r} would land outside the target directory "
            f"(resolves to {path!r}); refusing to extract this archive, it is corrupt or "
            "malicious: fetch it again from the official source"
        )
    return normal


def _check_tar_members(archive: Path, members: list[tarfile.TarInfo]) -> None:
    links: set[str] = set()
    for member in members:
        normal = _check_inside(archive, member.name, member.name)
        if _passes_through(member.name, links):
            raise ValueError(
                f"{archive}: entry {member.name!r} is written through a symlink in the "
                "archive; refusing to extract it"
            )
        if member.issym():
            # A symlink's target is relative to the link's own folder (or absolute).
            target = posixpath.join(posixpath.dirname(normal), member.linkname)
            _check_inside(archive, member.name, target)
            links.add(normal)
        elif member.islnk():  # a hardlink's target is relative to the archive root
            _check_inside(archive, member.name, member.linkname)
        elif not (member.isfile() or member.isdir()):
            raise ValueError(
                f"{archive}: entry {member.name!r} is a device or fifo; refusing to extract it"
            )


def _passes_through(name: str, links: set[str]) -> bool:
    """True if a folder on the way to `name` is one of the archive's own symlinks."""
    parts = name.replace("\\", "/").split("/")[:-1]
    prefixes = (posixpath.normpath("/".join(parts[: i + 1])) for i in range(len(parts)))
    return any(prefix in links for prefix in prefixes)


def _relative_files(root: Path) -> list[Path]:
    files = []
    for folder, _, names in os.walk(root):  # does not follow symlinked directories
        files.extend(Path(folder, name).relative_to(root) for name in names)
    return sorted(files)


def _move_entries(content: Path, target_dir: Path, replaced: Path) -> None:
    replaced.mkdir()
    for entry in sorted(content.iterdir()):
        final = target_dir / entry.name
        if final.exists() or final.is_symlink():
            # Move the old one aside first: two renames, never a half-deleted tree in place.
            os.replace(final, replaced / entry.name)
        os.replace(entry, final)
