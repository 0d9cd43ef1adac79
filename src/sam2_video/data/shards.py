"""Clip shards: uncompressed POSIX (pax) tar files of .npy arrays + JSON, and a manifest.

A split directory holds
    shard-00000.tar, shard-00001.tar, ...   per clip, in this order:
        <clip>/frames.npy   (T, H, W, 3) uint8
        <clip>/masks.npy    (T, O, H, ceil(W / 8)) uint8 = np.packbits(masks, axis=-1)
        <clip>/meta.json    {"name", "object_ids", "shape": [T, O, H, W]}
    manifest.json           written last: a directory without it is incomplete

Nothing is pickled: arrays are written with np.save(allow_pickle=False) and read with
np.load(allow_pickle=False). Tar headers are fixed (mtime 0, uid/gid 0, no user names,
mode 0o644), so identical clips give byte-identical shards.
"""

from __future__ import annotations

import ctypes
import functools
import hashlib
import io
import itertools
import json
import multiprocessing
import os
import re
import tarfile
from collections import Counter, deque
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from concurrent.futures import Future, ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from sam2_video.data.clips import Clip
from sam2_video.files import atomic_path, read_json, write_json_atomic

if TYPE_CHECKING:  # imported where used: a shard worker process never needs it (~20 ms)
    from tqdm import tqdm

FORMAT = "sam2-video-shards"
VERSION = 1
MANIFEST = "manifest.json"
MEMBERS = ("frames.npy", "masks.npy", "meta.json")
_SHARD_RE = re.compile(r"shard-(\d{5,})\.tar")

# clip_fn(source, rng=..., on_skip=...) -> clips of one source (a video, an image, ...).
ClipFn = Callable[..., Iterable[Clip]]


def shard_name(index: int) -> str:
    return f"shard-{index:05d}.tar"


# ---------------------------------------------------------------------------- clip <-> bytes


@dataclass(frozen=True)
class EncodedClip:
    """A clip as its tar members: (member file name, payload) in MEMBERS order."""

    name: str
    members: tuple[tuple[str, bytes], ...]


# (member, payload in pieces) in MEMBERS order: written piece by piece, the frames are
# never copied into one bytes object.
_Payloads = tuple[tuple[str, tuple[bytes | memoryview, ...]], ...]


@functools.lru_cache(maxsize=64)
def _npy_header(dtype: np.dtype, shape: tuple[int, ...]) -> bytes:
    """The .npy header np.save writes for a C-contiguous array of this dtype and shape (what
    header_data_from_array_1_0 finds for one; the same for every clip of a dataset)."""
    header = io.BytesIO()
    data = {"descr": np.lib.format.dtype_to_descr(dtype), "fortran_order": False, "shape": shape}
    np.lib.format.write_array_header_1_0(header, data)
    return header.getvalue()


def _npy_pieces(array: np.ndarray) -> tuple[bytes, memoryview]:
    """What np.save(allow_pickle=False) writes for `array` in C order (one layout): its
    header and a view of its bytes (np.save's buffered copy loop is slow in memory)."""
    array = np.ascontiguousarray(array)
    return _npy_header(array.dtype, array.shape), memoryview(array.reshape(-1))


def _check_clip_name(name: str) -> None:
    if not name or name in (".", "..") or any(c in name for c in "/\\\0"):
        raise ValueError(f"clip name {name!r} is not a file-safe name (no '/', '\\', NUL)")


def _clip_payloads(clip: Clip) -> _Payloads:
    _check_clip_name(clip.name)
    meta = {
        "name": clip.name,
        "object_ids": [int(oid) for oid in clip.object_ids],
        "shape": list(clip.masks.shape),  # (T, O, H, W) before packing
    }
    meta_bytes = json.dumps(meta, sort_keys=True, ensure_ascii=False).encode("utf-8")
    pieces = (_npy_pieces(clip.frames), _npy_pieces(np.packbits(clip.masks, axis=-1)))
    return tuple(zip(MEMBERS, (*pieces, (meta_bytes,)), strict=True))


def encode_clip(clip: Clip) -> EncodedClip:
    payloads = _clip_payloads(clip)
    return EncodedClip(clip.name, tuple((member, b"".join(p)) for member, p in payloads))


def decode_clip(frames: bytes, masks: bytes, meta: bytes) -> Clip:
    """The inverse of encode_clip, from the three member payloads."""
    info = json.loads(meta.decode("utf-8"))
    packed = np.load(io.BytesIO(masks), allow_pickle=False)  # (T, O, H, ceil(W/8))
    width = info["shape"][-1]
    unpacked = np.unpackbits(packed, axis=-1, count=width).view(np.bool_)  # (T, O, H, W)
    rgb = np.load(io.BytesIO(frames), allow_pickle=False)  # (T, H, W, 3)
    return Clip(info["name"], rgb, unpacked, tuple(info["object_ids"]))


# ---------------------------------------------------------------------------- writing


def _tar_info(name: str, size: int) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.size, info.mtime, info.mode = size, 0, 0o644
    info.uid = info.gid = 0
    info.uname = info.gname = ""
    return info


# A ustar header block after its checksum field, as tarfile writes it for _tar_info: type
# "0" (a file), no link name, magic "ustar\0" + version "00", empty user/group names,
# device numbers and prefix, NUL padding to BLOCKSIZE.
_USTAR_TAIL = b"0" + bytes(100) + tarfile.POSIX_MAGIC + bytes(32 + 32 + 8 + 8 + 155 + 12)
_USTAR_MAX_SIZE = 8**11  # the size field's 11 octal digits


def _member_header(name: str, size: int) -> bytes:
    """The header tarfile writes for a member `name` of `size` bytes (_tar_info) in a pax
    archive with utf-8 names: one ustar block when the name is ASCII and fits its 100
    characters, built here (tarfile's TarInfo.tobuf costs more than the rest of a clip's
    encoding); else tarfile's own header, pax records first."""
    if name.isascii() and len(name) <= tarfile.LENGTH_NAME and 0 <= size < _USTAR_MAX_SIZE:
        # name, mode, uid, gid, size, mtime: NUL-terminated octal numbers
        head = name.encode("ascii").ljust(tarfile.LENGTH_NAME, tarfile.NUL)
        head += b"0000644\0" + b"0000000\0" * 2 + b"%011o\0" % size + b"0" * 11 + b"\0"
        checksum = sum(head) + sum(b" " * 8) + sum(_USTAR_TAIL)  # the field counts as spaces
        return head + b"%06o\0 " % checksum + _USTAR_TAIL
    return _tar_info(name, size).tobuf(tarfile.PAX_FORMAT, "utf-8", "surrogateescape")


@dataclass(frozen=True)
class _ClipRecord:
    """A clip's tar members as bytes, exactly as tarfile writes them into a pax archive."""

    name: str
    pieces: tuple[bytes | memoryview, ...]

    @property
    def size(self) -> int:
        return sum(map(len, self.pieces))


def _clip_record(name: str, payloads: _Payloads) -> _ClipRecord:
    """Per member: header block(s) (pax, utf-8, as tarfile.open(format=PAX_FORMAT,
    encoding="utf-8") writes them), the payload, NUL padding to a whole block."""
    pieces: list[bytes | memoryview] = []
    for member, payload in payloads:
        size = sum(len(piece) for piece in payload)
        pieces += [_member_header(f"{name}/{member}", size), *payload]
        pieces.append(bytes(-size % tarfile.BLOCKSIZE))
    return _ClipRecord(name, tuple(pieces))


class _TarWriter:
    """Streams clip records into an uncompressed pax tar, hashing (sha256) as it writes.

    The bytes are tarfile's: its member records, then two zero blocks and zero padding to
    a whole record (RECORDSIZE), as TarFile.close writes them.
    """

    def __init__(self, file: io.BufferedWriter) -> None:
        self.file, self.sha256, self.size = file, hashlib.sha256(), 0

    def write(self, pieces: Iterable[bytes | memoryview]) -> None:
        for piece in pieces:
            self.file.write(piece)
            self.sha256.update(piece)
            self.size += len(piece)

    def close(self) -> None:
        end = 2 * tarfile.BLOCKSIZE
        self.write([bytes(end + (-(self.size + end) % tarfile.RECORDSIZE))])


def _write_shard(path: Path, records: Iterable[_ClipRecord]) -> dict[str, Any]:
    names = []
    with atomic_path(path) as tmp:  # a failure mid-shard leaves no file under the final name
        with open(tmp, "wb") as file:
            tar = _TarWriter(file)
            for record in records:
                tar.write(record.pieces)
                names.append(record.name)
            tar.close()
        summary = {"file": path.name, "num_clips": len(names), "sha256": tar.sha256.hexdigest()}
        summary |= {"bytes": tar.size, "clips": names}
    return summary


def _unique_names(records: Iterable[_ClipRecord]) -> Iterator[_ClipRecord]:
    seen: set[str] = set()
    for record in records:
        if record.name in seen:
            raise ValueError(f"clip name {record.name!r} occurs twice in one split")
        seen.add(record.name)
        yield record


def _remove_stale_shards(out_dir: Path, keep: int) -> None:
    for path in out_dir.iterdir():
        match = _SHARD_RE.fullmatch(path.name)
        if match and int(match.group(1)) >= keep:
            path.unlink()


def _write_records(
    records: Iterable[_ClipRecord], out_dir: Path, clips_per_shard: int
) -> list[dict[str, Any]]:
    if clips_per_shard < 1:
        raise ValueError(f"clips_per_shard must be >= 1, got {clips_per_shard}")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / MANIFEST).unlink(missing_ok=True)  # incomplete from here until write_manifest
    remaining = _unique_names(records)
    summaries: list[dict[str, Any]] = []
    while (first := next(remaining, None)) is not None:
        batch = itertools.chain([first], itertools.islice(remaining, clips_per_shard - 1))
        summaries.append(_write_shard(out_dir / shard_name(len(summaries)), batch))
    _remove_stale_shards(out_dir, len(summaries))
    return summaries


def write_shards(
    clips: Iterable[Clip], out_dir: Path, clips_per_shard: int
) -> list[dict[str, Any]]:
    """Stream clips into shard-00000.tar, ... (one clip in memory at a time).

    Each shard is written under a temp name and renamed when complete. A manifest.json
    already in out_dir is removed first, and shard files beyond the new count at the end.
    Returns one record per shard: file, num_clips, sha256, bytes, clips (names).
    """
    return _write_records(map(_encoded_record, clips), out_dir, clips_per_shard)


def write_manifest(
    out_dir: Path,
    shard_records: Sequence[Mapping[str, Any]],
    params: Mapping[str, Any],
    skips: Mapping[str, int],
) -> dict[str, Any]:
    """Write manifest.json (atomically, last): counts, sizes, hashes, params, skip reasons."""
    manifest = {
        "format": FORMAT,
        "version": VERSION,
        "num_shards": len(shard_records),
        "num_clips": sum(r["num_clips"] for r in shard_records),
        "total_bytes": sum(r["bytes"] for r in shard_records),
        "shards": [dict(r) for r in shard_records],
        "params": dict(params),
        "skips": {reason: int(n) for reason, n in sorted(skips.items())},
    }
    try:
        manifest = json.loads(json.dumps(manifest))  # returned exactly as it reads back
    except TypeError as err:
        raise ValueError(f"{out_dir}: shard params must be JSON values ({err})") from None
    write_json_atomic(Path(out_dir) / MANIFEST, manifest)
    return manifest


# ---------------------------------------------------------------------------- parallel build


def source_rng(seed: int, index: int) -> np.random.Generator:
    """The generator of source `index`: SeedSequence(seed).spawn(n)[index], for any n."""
    return np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(index,)))


class LazySourceRng:
    """`source_rng(seed, index)`, made on first use. Most video sources never draw (only a
    clip with more than max_objects objects does), and a worker's first use of numpy.random
    imports it: ~10 ms, a few percent of a small build."""

    def __init__(self, seed: int, index: int) -> None:
        self._key = (seed, index)
        self._rng: np.random.Generator | None = None

    def __getattr__(self, name: str) -> Any:  # only names the instance itself lacks
        if self._rng is None:
            self._rng = source_rng(*self._key)
        return getattr(self._rng, name)


class _SkipCounter(Counter):
    def __call__(self, reason: str) -> None:
        self[reason] += 1


def _encoded_record(clip: Clip) -> _ClipRecord:
    return _clip_record(clip.name, _clip_payloads(clip))


# glibc's mallopt parameters (malloc.h) and the values the workers use: 32 MiB is the
# largest mmap threshold glibc's own adaptive scheme picks.
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3
_TRIM_THRESHOLD, _MMAP_THRESHOLD = 64 << 20, 32 << 20


def reuse_freed_memory() -> None:
    """Worker initializer: glibc keeps freed memory for reuse instead of returning it to
    the kernel. Each source allocates and frees about a megabyte of frame buffers and masks;
    taking those pages from the kernel again (one zero-filled page fault per 4 KiB) cost
    about a tenth of a worker's time above decoding. Peak memory is what one source needs,
    as before; it is just not handed back in between. A no-op without glibc's mallopt."""
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError, TypeError):  # no C library to load, or not glibc
        return
    mallopt(_M_MMAP_THRESHOLD, _MMAP_THRESHOLD)  # fixed: setting either stops the adapting
    mallopt(_M_TRIM_THRESHOLD, _TRIM_THRESHOLD)


def _spool_source(
    clip_fn: ClipFn, source: Any, seed: int, index: int, spool: Path
) -> tuple[dict[str, int], list[tuple[str, int]]]:
    """Worker: write the tar records of one source's clips to a spool file, one after the
    other; its skip counts and (clip name, record bytes) per clip."""
    skips = _SkipCounter()
    clips = clip_fn(source, rng=LazySourceRng(seed, index), on_skip=skips)
    sizes = []
    # Overwritten in place, not truncated: reusing the file's pages is cheaper than freeing
    # and allocating them for every source; only the first sum(sizes) bytes are read back.
    with open(os.open(spool, os.O_WRONLY | os.O_CREAT, 0o600), "wb") as file:
        for record in map(_encoded_record, clips):
            file.writelines(record.pieces)
            sizes.append((record.name, record.size))
    return dict(skips), sizes


def _read_spool(
    spool: Path, sizes: list[tuple[str, int]], buffer: bytearray
) -> Iterator[_ClipRecord]:
    """Clip records back from a spool file, one at a time, read into `buffer`: reused, so a
    record is valid until the next one is read (no fresh pages to fault in per clip)."""
    with open(spool, "rb") as file:
        for name, size in sizes:
            if len(buffer) < size:
                buffer.extend(bytes(size - len(buffer)))
            with memoryview(buffer)[:size] as view:
                if file.readinto(view) != size:
                    raise ValueError(f"{spool}: spool file is shorter than its clips")
                yield _ClipRecord(name, (view,))


def _serial_clips(
    sources: Sequence[Any], clip_fn: ClipFn, seed: int, skips: _SkipCounter, bar: tqdm
) -> Iterator[_ClipRecord]:
    for index, source in enumerate(sources):
        for clip in clip_fn(source, rng=LazySourceRng(seed, index), on_skip=skips):
            yield _encoded_record(clip)
        bar.update()


_SpoolJob = tuple[Future[tuple[dict[str, int], list[tuple[str, int]]]], Path]


def _collect(
    job: _SpoolJob, skips: _SkipCounter, bar: tqdm, buffer: bytearray
) -> Iterator[_ClipRecord]:
    future, spool = job
    source_skips, sizes = future.result()  # re-raises the worker's error (first bad source)
    skips.update(source_skips)
    yield from _read_spool(spool, sizes, buffer)
    bar.update()


def _parallel_clips(
    sources: Sequence[Any],
    clip_fn: ClipFn,
    seed: int,
    skips: _SkipCounter,
    bar: tqdm,
    workers: int,
    spool_dir: Path,
) -> Iterator[_ClipRecord]:
    """Sources run in worker processes; clips come back in source order (spooled on disk)."""
    context = multiprocessing.get_context("spawn")  # never fork a parent that has threads
    pending: deque[_SpoolJob] = deque()
    in_flight = 2 * workers  # sources; their clips wait in spool files, not in memory
    buffer = bytearray()  # one clip record at a time comes back through it
    with ProcessPoolExecutor(workers, mp_context=context, initializer=reuse_freed_memory) as pool:
        try:
            for index, source in enumerate(sources):
                # Source index - in_flight, the last user of this spool, was read back: below
                spool = spool_dir / f"spool-{index % in_flight}.bin"
                future = pool.submit(_spool_source, clip_fn, source, seed, index, spool)
                pending.append((future, spool))
                if len(pending) >= in_flight:
                    yield from _collect(pending.popleft(), skips, bar, buffer)
            while pending:
                yield from _collect(pending.popleft(), skips, bar, buffer)
        finally:
            for future, _ in pending:
                future.cancel()


def build_split(
    sources: Sequence[Any],
    clip_fn: ClipFn,
    out_dir: Path,
    *,
    seed: int,
    workers: int,
    clips_per_shard: int,
    params: Mapping[str, Any],
    progress: bool = False,
) -> dict[str, Any]:
    """Shard all clips of `sources` into out_dir (atomically, as a whole); the manifest.

    clip_fn(source, rng=..., on_skip=...) yields a source's clips, e.g.
    functools.partial(coco.video_clips, clip_length=..., ...); it must be picklable when
    workers > 1. Source i gets its own generator (`source_rng(seed, i)`) and clips are
    written in source order, so the output is byte-identical for any `workers`. At most
    2 * workers sources are in flight; their clips wait in spool files, not in memory.
    `params` (plus seed and clips_per_shard) are recorded in the manifest. A failed build
    leaves any previous out_dir as it was.
    """
    from tqdm import tqdm

    skips = _SkipCounter()
    with (
        atomic_path(out_dir) as tmp_dir,
        tqdm(total=len(sources), desc=f"shard {Path(out_dir).name}", disable=not progress) as bar,
    ):
        if workers > 1:
            clips = _parallel_clips(sources, clip_fn, seed, skips, bar, workers, tmp_dir.parent)
        else:
            clips = _serial_clips(sources, clip_fn, seed, skips, bar)
        records = _write_records(clips, tmp_dir, clips_per_shard)
        used = {**params, "seed": seed, "clips_per_shard": clips_per_shard}  # not workers
        manifest = write_manifest(tmp_dir, records, used, skips)
    return manifest


# ---------------------------------------------------------------------------- reading


def _read_manifest(split_dir: Path) -> dict[str, Any]:
    path = split_dir / MANIFEST
    if not path.is_file():
        raise FileNotFoundError(
            f"{path}: no shard manifest, so {split_dir} is missing or incomplete: "
            "run the shard stage (dvc repro shard)"
        )
    manifest = read_json(path)
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise ValueError(f"{path}: not a {FORMAT} manifest: run the shard stage")
    if manifest.get("version") != VERSION:
        raise ValueError(
            f"{path}: shard format version {manifest.get('version')}, this code reads "
            f"{VERSION}: re-run the shard stage"
        )
    return manifest


def _index_shard(path: Path, record: Mapping[str, Any]) -> list[list[int]]:
    """Per clip of one shard: [data offsets of frames, masks, meta, then their sizes]."""
    mismatch = f"{path}: does not match {MANIFEST}"
    if not _SHARD_RE.fullmatch(str(record["file"])):  # a bare shard-NNNNN.tar, no path
        raise ValueError(f"{mismatch} (not a shard file name): re-run the shard stage")
    if not path.is_file() or path.stat().st_size != record["bytes"]:
        raise ValueError(f"{mismatch} (missing or wrong size): re-run the shard stage")
    with tarfile.open(path, "r:") as tar:
        infos = tar.getmembers()  # reads headers only; data blocks are seeked over
    expected = [f"{name}/{member}" for name in record["clips"] for member in MEMBERS]
    if [info.name for info in infos] != expected:
        raise ValueError(f"{mismatch} (its clips differ from the manifest): re-run the shard stage")
    n = len(MEMBERS)
    groups = [infos[k : k + n] for k in range(0, len(infos), n)]
    return [[*(i.offset_data for i in group), *(i.size for i in group)] for group in groups]


class ShardReader:
    """Random access to the clips of a split directory (what a torch Dataset wraps).

    Tar member offsets are indexed once here; an item costs one positioned read of its
    three members. Files are opened lazily per process, so the reader can be handed to
    DataLoader workers (forked: fresh handles per pid; spawned: handles are not pickled).
    """

    def __init__(self, split_dir: Path) -> None:
        self.split_dir = Path(split_dir)
        self.manifest = _read_manifest(self.split_dir)
        records = self.manifest["shards"]
        self._paths = [self.split_dir / r["file"] for r in records]
        rows, shard_of = [], []
        for shard, (path, record) in enumerate(zip(self._paths, records, strict=True)):
            shard_rows = _index_shard(path, record)
            rows += shard_rows
            shard_of += [shard] * len(shard_rows)
        table = np.array(rows, dtype=np.int64).reshape(-1, 2 * len(MEMBERS))
        self._offsets, self._sizes = table[:, : len(MEMBERS)], table[:, len(MEMBERS) :]
        self._shard_of = np.array(shard_of, dtype=np.int64)
        self.names: list[str] = [name for r in records for name in r["clips"]]
        self._fds: dict[int, int] = {}
        self._pid = os.getpid()

    def __len__(self) -> int:
        return len(self.names)

    def __getitem__(self, index: int) -> Clip:
        if not -len(self) <= index < len(self):
            raise IndexError(f"clip index {index} out of range for {len(self)} clips")
        offsets, sizes = self._offsets[index], self._sizes[index]
        start, stop = int(offsets.min()), int((offsets + sizes).max())
        blob = os.pread(self._fd(int(self._shard_of[index])), stop - start, start)
        if len(blob) != stop - start:
            raise ValueError(
                f"{self._paths[self._shard_of[index]]}: truncated: re-run the shard stage"
            )
        parts = [blob[o - start : o - start + n] for o, n in zip(offsets, sizes, strict=True)]
        return decode_clip(*parts)

    def _fd(self, shard: int) -> int:
        if self._pid != os.getpid():  # forked: drop our copies of the parent's descriptors
            for fd in self._fds.values():
                os.close(fd)
            self._fds, self._pid = {}, os.getpid()
        if shard not in self._fds:
            self._fds[shard] = os.open(self._paths[shard], os.O_RDONLY)
        return self._fds[shard]

    def close(self) -> None:
        if self._pid == os.getpid():
            for fd in self._fds.values():
                os.close(fd)
        self._fds = {}

    def __enter__(self) -> ShardReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __getstate__(self) -> dict[str, Any]:
        # For spawned DataLoader workers: descriptors are per process, never sent.
        return {k: v for k, v in self.__dict__.items() if k not in ("_fds", "_pid")}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._fds, self._pid = {}, os.getpid()
