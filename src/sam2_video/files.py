"""Small file helpers: atomic writes, hashing, JSON. Every output goes through a temp path."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any


@contextlib.contextmanager
def atomic_path(final: Path | str) -> Iterator[Path]:
    """Yield a temp path beside `final`; rename onto `final` only if the block succeeds.

    Works for files and directories: a killed or failed writer leaves no `final` behind,
    only a `.tmp-*` sibling that the next run ignores and overwrites.
    """
    final = Path(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".tmp-{final.name}-", dir=final.parent))
    target = tmp / final.name
    try:
        yield target
        if final.is_dir() and not final.is_symlink():
            shutil.rmtree(final)
        os.replace(target, final)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def write_bytes_atomic(path: Path | str, data: bytes) -> None:
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)


def write_json_atomic(path: Path | str, obj: Any) -> None:
    text = json.dumps(obj, indent=2, sort_keys=True, ensure_ascii=False) + "\n"
    write_bytes_atomic(path, text.encode("utf-8"))


def read_json(path: Path | str) -> Any:
    path = Path(path)
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise FileNotFoundError(f"{path}: file not found") from None
    except json.JSONDecodeError as err:
        raise ValueError(f"{path}: not valid JSON ({err})") from None


def sha256_file(path: Path | str, chunk_size: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(chunk_size):
            digest.update(chunk)
    return digest.hexdigest()


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def source_digest(package: Path, extra_files: tuple[Path, ...] = ()) -> str:
    """sha256 over the names and bytes of a package's code (`.py`, `.yaml`) and `extra_files`.

    Weights and data inside the package are left out: they have their own hashes.
    """
    files = sorted([*package.rglob("*.py"), *package.rglob("*.yaml")]) + list(extra_files)
    digest = hashlib.sha256()
    for path in files:
        data = path.read_bytes()
        name = path.relative_to(package) if path.is_relative_to(package) else Path(path.name)
        digest.update(f"{name.as_posix()}\0{len(data)}\0".encode())
        digest.update(data)
    return digest.hexdigest()
