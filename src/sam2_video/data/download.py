"""Verified downloads (pooch), safe archive extraction, and the registry of official files.

`download` is `pooch.retrieve`: the body streams into a temporary file beside `dest`, is
checked against the pinned sha256/md5 and only then renamed onto `dest`; a `dest` that
already matches is returned without a request. pooch does not resume: an interrupted
download starts again from byte 0 (transient failures are retried here with exponential
back-off), and a partial or unverified file never reaches `dest`. Archives are extracted
with the standard library, not pooch's Unzip/Untar (see `extract_archive`).
"""

from __future__ import annotations

import os
import posixpath
import re
import shutil
import tarfile
import tempfile
import time
import zipfile
import zlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

import pooch
import requests

CHUNK_BYTES = 1 << 20


@dataclass(frozen=True)
class RemoteFile:
    """One published file: where it lives and what its bytes must hash to.

    `size` (bytes) is for the reader (COCO train is 19 GB); nothing checks it.
    """

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
_SAM2_SHA256_AND_SIZE = {
    "tiny": ("7402e0d864fa82708a20fbd15bc84245c2f26dff0eb43a4b5b93452deb34be69", 156008466),
    "small": ("6d1aa6f30de5c92224f8172114de081d104bbd23dd9dc5c58996f0cad5dc4d38", 184416285),
    "base_plus": ("a2345aede8715ab1d5d31b4a509fb160c5a4af1970f199d9054ccfb746c004c5", 323606802),
    "large": ("2647878d5dfa5098f2f8649825738a9345572bae2d4350a2468587ece47dd318", 898083611),
}
SAM2_CHECKPOINTS: dict[str, RemoteFile] = {
    name: RemoteFile(
        f"{_SAM2_BASE}/sam2.1_hiera_{name}.pt", f"sam2.1_hiera_{name}.pt", sha, size=size
    )
    for name, (sha, size) in _SAM2_SHA256_AND_SIZE.items()
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
    allow_unverified: bool = False,
    sleep: Callable[[float], None] = time.sleep,
) -> Path:
    """Download `url` to `dest` with pooch, verified against `sha256` or `md5` before it lands.

    Without a checksum the call is refused unless `allow_unverified=True`; then an existing
    `dest` is kept as is. Network errors, truncated bodies and 5xx/429 answers are retried
    `retries` times, waiting `backoff_s`, then twice that, ...; each try starts at byte 0.
    """
    dest = Path(dest)
    known_hash = _known_hash(url, sha256, md5, allow_unverified)
    downloader = pooch.HTTPDownloader(
        progressbar=progress, chunk_size=CHUNK_BYTES, timeout=timeout_s
    )
    for attempt in range(retries + 1):
        if attempt:
            sleep(backoff_s * 2 ** (attempt - 1))
        try:
            return _retrieve(url, dest, known_hash, downloader)
        except _TransientError as err:
            last = err
    raise ConnectionError(
        f"{url}: download failed after {retries + 1} attempts (last: {last}); {dest} was not "
        "written and no partial file is kept: check the network and run again"
    ) from last


def _known_hash(
    url: str, sha256: str | None, md5: str | None, allow_unverified: bool
) -> str | None:
    """pooch's `known_hash`: "sha256:<hex>" or "md5:<hex>"; None only if allowed."""
    if sha256 is not None and md5 is not None:
        raise ValueError(f"{url}: pass the published sha256 or md5, not both")
    if sha256 is not None:
        return f"sha256:{sha256.strip().lower()}"
    if md5 is not None:
        return f"md5:{md5.strip().lower()}"
    if not allow_unverified:
        raise ValueError(
            f"{url}: no sha256 or md5 to verify the download against; pass the published "
            "checksum, or allow_unverified=True to accept whatever the server sends"
        )
    return None


def _retrieve(
    url: str, dest: Path, known_hash: str | None, downloader: pooch.HTTPDownloader
) -> Path:
    """One `pooch.retrieve`; its errors become `_TransientError` or one line naming `url`."""
    try:
        pooch.retrieve(url, known_hash, fname=dest.name, path=dest.parent, downloader=downloader)
    except requests.HTTPError as err:
        status, reason = err.response.status_code, err.response.reason
        if status >= 500 or status == 429:
            raise _TransientError(f"HTTP {status} {reason}") from err
        raise ConnectionError(
            f"{url}: server answered HTTP {status} {reason}; check the URL, or download the "
            "file by hand and pass its local path"
        ) from err
    except (
        requests.ConnectionError,
        requests.Timeout,
        requests.exceptions.ChunkedEncodingError,  # body shorter than its Content-Length
    ) as err:
        raise _TransientError(f"{type(err).__name__}: {err}") from err
    except requests.RequestException as err:  # a malformed URL, too many redirects, ...
        raise ConnectionError(f"{url}: {type(err).__name__}: {err}; check the URL") from err
    except ValueError as err:  # pooch: hash mismatch, the download is already deleted
        raise ValueError(
            f"{url}: {err} Run again to fetch it afresh. If it fails again the server sends "
            "a different file than the one pinned: check the URL and checksum, or download "
            "the file by hand and pass its local path."
        ) from err
    return dest


# --------------------------------------------------------------------------- registry


def fetch_file(remote: RemoteFile, dest_dir: Path, *, progress: bool = True) -> Path:
    """Download a registry entry into `dest_dir/remote.filename`, verified."""
    return download(
        remote.url,
        Path(dest_dir) / remote.filename,
        sha256=remote.sha256,
        md5=remote.md5,
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

    Not pooch's Unzip/Untar: they extract in place (a failure leaves half an archive), Unzip
    quietly renames a "../x" or "/x" member to a name inside instead of refusing the archive,
    and pooch 1.9.0 passes tarfile's "data" filter only on Python >= 3.12, so on 3.11 Untar
    writes "../x", absolute members, links to anywhere and fifos. Here a member whose name is
    absolute or climbs out refuses the whole archive, and tar members go through the "data"
    filter, which also refuses links leading out, writes through links and device files.
    The archive is unpacked into a temp directory beside `target_dir`; each top-level entry
    is then renamed into `target_dir` whole (replacing one of the same name), so a failure
    leaves nothing half-written and several archives (e.g. COCO's images and annotations)
    can share one target.
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
            for name in zf.namelist():
                _check_inside(archive, name)
            # zipfile writes symlink entries as plain files holding the link text, so a zip
            # cannot plant a link that later writes follow.
            zf.extractall(dest)
    elif tarfile.is_tarfile(archive):
        with tarfile.open(archive, "r:*") as tf:
            members = tf.getmembers()
            for member in members:
                _check_inside(archive, member.name)
            # Checks each member against the real filesystem as it goes (FilterError).
            tf.extractall(dest, members=members, filter="data")
    else:
        raise ValueError(f"{archive}: neither a zip nor a tar archive; cannot extract it")


def _check_inside(archive: Path, name: str) -> None:
    """ValueError naming the member if `name` is absolute or leaves the target directory."""
    unified = name.replace("\\", "/")
    normal = posixpath.normpath(unified)
    is_absolute = unified.startswith("/") or re.match(r"[A-Za-z]:", unified) is not None
    if is_absolute or normal == ".." or normal.startswith("../"):
        raise ValueError(
            f"{archive}: entry {name!r} would land outside the target directory; refusing "
            "to extract this archive, it is corrupt or malicious: fetch it again from the "
            "official source"
        )


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
