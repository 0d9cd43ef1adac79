"""Clip shards: uncompressed POSIX (pax) tar files of .npy arrays + JSON, and a manifest.

A split directory holds
    shard-00000.tar, shard-00001.tar, ...   per clip, in this order:
        <clip>/frames.npy   (N, H, W, 3) uint8: only on the first clip of a frame group
        <clip>/masks.npy    (T, O, H, ceil(W / 8)) uint8 = np.packbits(masks, axis=-1)
        <clip>/meta.json    {"name", "object_ids", "shape": [T, O, H, W],
                             "frames": [owner clip, first row]}
    manifest.json           written last: a directory without it is incomplete

A clip's frames are rows [first row, first row + T) of its owner's frames.npy. Sliding
windows of one source overlap (stride < clip_length): consecutive such clips form a frame
group whose frames are stored once, in the group's first clip (the owner); any other clip
owns its frames ([itself, 0]). A group never spans two shards, so a shard holds at most
clips_per_shard clips, fewer when the next group does not fit.

Nothing is pickled: arrays are written as np.save(allow_pickle=False) writes them and read
without pickle. Tar headers are fixed (mtime 0, uid/gid 0, no user names, mode 0o644), so
identical clips give byte-identical shards.
"""

from __future__ import annotations

import ctypes
import functools
import hashlib
import io
import json
import math
import multiprocessing
import os
import re
import tarfile
from collections import Counter, deque
from collections.abc import Callable, Container, Iterable, Iterator, Mapping, Sequence
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
VERSION = 2
MANIFEST = "manifest.json"
FRAMES, MASKS, META = "frames.npy", "masks.npy", "meta.json"
_SHARD_RE = re.compile(r"shard-(\d{5,})\.tar")
# A frame group holds at most this many bytes (its distinct frames and packed masks): they
# stay in memory until the group is written (a long video must not be held whole).
GROUP_BYTES = 32 << 20

# clip_fn(source, rng=..., on_skip=...) -> clips of one source (a video, an image, ...).
ClipFn = Callable[..., Iterable[Clip]]


def shard_name(index: int) -> str:
    return f"shard-{index:05d}.tar"


# ---------------------------------------------------------------------------- frame groups


@dataclass(frozen=True)
class _GroupClip:
    """A clip of a frame group without its frames: those are the group's rows [row, row+T)."""

    name: str
    object_ids: tuple[int, ...]
    shape: tuple[int, ...]  # (T, O, H, W) before packing
    packed_masks: np.ndarray  # (T, O, H, ceil(W / 8)) uint8
    row: int


class FrameGroup:
    """Clips of one source that share frames, as they are written: the distinct frames in
    pieces (source order) and each clip's packed masks and first row. A clip's frames are
    not kept beyond the rows it adds, so memory follows the distinct frames."""

    def __init__(self, clip: Clip) -> None:
        self.span = clip.source_frames  # source indices of the stored frames; None: own
        self.frame_shape = clip.frames.shape[1:]
        self.pieces: list[np.ndarray] = [clip.frames]
        self.clips: list[_GroupClip] = []
        self.held = clip.frames.nbytes
        self._add(clip, np.packbits(clip.masks, axis=-1), row=0)

    @property
    def owner(self) -> str:
        return self.clips[0].name

    def _add(self, clip: Clip, packed: np.ndarray, row: int) -> None:
        self.held += packed.nbytes
        self.clips.append(_GroupClip(clip.name, clip.object_ids, clip.masks.shape, packed, row))

    def join(self, clip: Clip, max_clips: int) -> bool:
        """Add `clip` if it is a window of this source overlapping the stored frames and the
        group stays within max_clips and GROUP_BYTES; whether it was added."""
        stored, span = self.span, clip.source_frames
        if stored is None or span is None or len(self.clips) >= max_clips:
            return False
        if clip.frames.shape[1:] != self.frame_shape:
            return False
        if not stored.start <= span.start < stored.stop <= span.stop:
            return False
        tail = clip.frames[stored.stop - span.start :]  # the frames not stored yet
        packed = np.packbits(clip.masks, axis=-1)  # (T, O, H, ceil(W / 8))
        if self.held + tail.nbytes + packed.nbytes > GROUP_BYTES:
            return False  # (a group's last clip: packed once more as the next one's first)
        # a view of a clip's own array would keep all its frames alive: copy the new ones
        self.pieces.append(tail if clip.frames.base is not None else tail.copy())
        self.held += tail.nbytes
        self._add(clip, packed, row=span.start - stored.start)
        self.span = range(stored.start, span.stop)
        return True


def frame_groups(clips: Iterable[Clip], max_clips: int) -> Iterator[FrameGroup]:
    """Consecutive clips of ONE source in frame groups (see the module docstring) of at
    most max_clips clips and GROUP_BYTES each."""
    if max_clips < 1:
        raise ValueError(f"a frame group holds at least one clip, got max_clips={max_clips}")
    group: FrameGroup | None = None
    for clip in clips:
        if group is None or not group.join(clip, max_clips):
            if group is not None:
                yield group
            group = FrameGroup(clip)
    if group is not None:
        yield group


# ---------------------------------------------------------------------------- clips -> bytes


@functools.lru_cache(maxsize=64)
def _npy_header(dtype: np.dtype, shape: tuple[int, ...]) -> bytes:
    """The .npy header np.save writes for a C-contiguous array of this dtype and shape (what
    header_data_from_array_1_0 finds for one; the same for every clip of a dataset)."""
    header = io.BytesIO()
    data = {"descr": np.lib.format.dtype_to_descr(dtype), "fortran_order": False, "shape": shape}
    np.lib.format.write_array_header_1_0(header, data)
    return header.getvalue()


def _npy_pieces(parts: Sequence[np.ndarray]) -> tuple[bytes | memoryview, ...]:
    """What np.save(allow_pickle=False) writes for np.concatenate(parts) in C order: its
    header and views of the parts' bytes (no concatenated copy; np.save's buffered copy
    loop is slow in memory as well)."""
    parts = [np.ascontiguousarray(part) for part in parts]
    shape = (sum(len(part) for part in parts), *parts[0].shape[1:])
    views = tuple(memoryview(part.reshape(-1)) for part in parts if part.size)
    return (_npy_header(parts[0].dtype, shape), *views)


def _check_clip_name(name: str) -> None:
    if not name or name in (".", "..") or any(c in name for c in "/\\\0"):
        raise ValueError(f"clip name {name!r} is not a file-safe name (no '/', '\\', NUL)")


def _meta_bytes(clip: _GroupClip, owner: str) -> bytes:
    meta = {
        "name": clip.name,
        "object_ids": [int(oid) for oid in clip.object_ids],
        "shape": list(clip.shape),  # (T, O, H, W) before packing
        "frames": [owner, clip.row],
    }
    return json.dumps(meta, sort_keys=True, ensure_ascii=False).encode("utf-8")


# (member file name, payload in pieces): written piece by piece, never joined.
_Members = list[tuple[str, tuple[bytes | memoryview, ...]]]


def _group_members(group: FrameGroup) -> _Members:
    """The tar members of a frame group: the owner's frames, then each clip's masks, meta."""
    for clip in group.clips:
        _check_clip_name(clip.name)
    members: _Members = [(f"{group.owner}/{FRAMES}", _npy_pieces(group.pieces))]
    for clip in group.clips:
        members.append((f"{clip.name}/{MASKS}", _npy_pieces([clip.packed_masks])))
        members.append((f"{clip.name}/{META}", (_meta_bytes(clip, group.owner),)))
    return members


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
class Record:
    """A frame group's tar members as bytes, exactly as tarfile writes them into a pax
    archive; `names` are its clips."""

    names: tuple[str, ...]
    pieces: tuple[bytes | memoryview, ...]

    @property
    def size(self) -> int:
        return sum(map(len, self.pieces))


def group_record(group: FrameGroup) -> Record:
    """Per member: header block(s) (pax, utf-8, as tarfile.open(format=PAX_FORMAT,
    encoding="utf-8") writes them), the payload, NUL padding to a whole block."""
    pieces: list[bytes | memoryview] = []
    for member, payload in _group_members(group):
        size = sum(len(piece) for piece in payload)
        pieces += [_member_header(member, size), *payload]
        pieces.append(bytes(-size % tarfile.BLOCKSIZE))
    return Record(tuple(clip.name for clip in group.clips), tuple(pieces))


def source_records(clips: Iterable[Clip], max_group_clips: int) -> Iterator[Record]:
    """The records of one source's clips (frame groups of at most max_group_clips)."""
    return map(group_record, frame_groups(clips, max_group_clips))


class _TarWriter:
    """Streams records into an uncompressed pax tar, hashing (sha256) as it writes.

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


def _write_shard(path: Path, records: Iterable[Record]) -> dict[str, Any]:
    names: list[str] = []
    with atomic_path(path) as tmp:  # a failure mid-shard leaves no file under the final name
        with open(tmp, "wb") as file:
            tar = _TarWriter(file)
            for record in records:
                tar.write(record.pieces)
                names += record.names
            tar.close()
        summary = {"file": path.name, "num_clips": len(names), "sha256": tar.sha256.hexdigest()}
        summary |= {"bytes": tar.size, "clips": names}
    return summary


def _unique_names(records: Iterable[Record]) -> Iterator[Record]:
    seen: set[str] = set()
    for record in records:
        for name in record.names:
            if name in seen:
                raise ValueError(f"clip name {name!r} occurs twice in one split")
            seen.add(name)
        yield record


class _ShardBatches:
    """Records in shard-sized batches: whole records, at most clips_per_shard clips a batch
    unless one record alone is larger. A batch must be written before the next is taken
    (a record read from a spool is valid until the next one is read)."""

    def __init__(self, records: Iterable[Record], clips_per_shard: int) -> None:
        self._records, self._limit = iter(records), clips_per_shard
        self._next = next(self._records, None)

    def __iter__(self) -> Iterator[Iterator[Record]]:
        while self._next is not None:
            yield self._batch()

    def _fits(self, count: int) -> bool:
        return self._next is not None and (
            not count or count + len(self._next.names) <= self._limit
        )

    def _batch(self) -> Iterator[Record]:
        count = 0
        while self._fits(count):
            record = self._next
            assert record is not None  # for the type checker: _fits saw it
            count += len(record.names)
            yield record
            self._next = next(self._records, None)


def _remove_stale_shards(out_dir: Path, keep: int) -> None:
    for path in out_dir.iterdir():
        match = _SHARD_RE.fullmatch(path.name)
        if match and int(match.group(1)) >= keep:
            path.unlink()


def _write_records(
    records: Iterable[Record], out_dir: Path, clips_per_shard: int
) -> list[dict[str, Any]]:
    if clips_per_shard < 1:
        raise ValueError(f"clips_per_shard must be >= 1, got {clips_per_shard}")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / MANIFEST).unlink(missing_ok=True)  # incomplete from here until write_manifest
    summaries: list[dict[str, Any]] = []
    for batch in _ShardBatches(_unique_names(records), clips_per_shard):
        summaries.append(_write_shard(out_dir / shard_name(len(summaries)), batch))
    _remove_stale_shards(out_dir, len(summaries))
    return summaries


def write_shards(
    clips: Iterable[Clip], out_dir: Path, clips_per_shard: int
) -> list[dict[str, Any]]:
    """Stream clips into shard-00000.tar, ... (one clip in memory at a time), each clip
    with its own frames (clips of several sources: no frame groups; build_split makes them).

    Each shard is written under a temp name and renamed when complete. A manifest.json
    already in out_dir is removed first, and shard files beyond the new count at the end.
    Returns one record per shard: file, num_clips, sha256, bytes, clips (names).
    """
    return _write_records(
        (group_record(FrameGroup(clip)) for clip in clips), out_dir, clips_per_shard
    )


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


def _source_clips(
    clip_fn: ClipFn, source: Any, seed: int, index: int, skips: _SkipCounter
) -> Iterable[Clip]:
    return clip_fn(source, rng=LazySourceRng(seed, index), on_skip=skips)


_Sizes = list[tuple[tuple[str, ...], int]]  # per record: its clips' names, its bytes


def _spool_source(
    clip_fn: ClipFn, source: Any, seed: int, index: int, spool: Path, max_group_clips: int
) -> tuple[dict[str, int], _Sizes]:
    """Worker: write the tar records of one source's clips to a spool file, one after the
    other; its skip counts and (clip names, bytes) per record."""
    skips = _SkipCounter()
    clips = _source_clips(clip_fn, source, seed, index, skips)
    sizes = []
    # Overwritten in place, not truncated: reusing the file's pages is cheaper than freeing
    # and allocating them for every source; only the first sum(sizes) bytes are read back.
    with open(os.open(spool, os.O_WRONLY | os.O_CREAT, 0o600), "wb") as file:
        for record in source_records(clips, max_group_clips):
            file.writelines(record.pieces)
            sizes.append((record.names, record.size))
    return dict(skips), sizes


def _read_spool(spool: Path, sizes: _Sizes, buffer: bytearray) -> Iterator[Record]:
    """Records back from a spool file, one at a time, read into `buffer`: reused, so a
    record is valid until the next one is read (no fresh pages to fault in per record)."""
    with open(spool, "rb") as file:
        for names, size in sizes:
            if len(buffer) < size:
                buffer.extend(bytes(size - len(buffer)))
            with memoryview(buffer)[:size] as view:
                if file.readinto(view) != size:
                    raise ValueError(f"{spool}: spool file is shorter than its clips")
                yield Record(names, (view,))


@dataclass(frozen=True)
class _Split:
    """The sources of a split and how each is cut into clips and records."""

    sources: Sequence[Any]
    clip_fn: ClipFn
    seed: int
    max_group_clips: int


def _serial_records(split: _Split, skips: _SkipCounter, bar: tqdm) -> Iterator[Record]:
    for index, source in enumerate(split.sources):
        clips = _source_clips(split.clip_fn, source, split.seed, index, skips)
        yield from source_records(clips, split.max_group_clips)
        bar.update()


_SpoolJob = tuple[Future[tuple[dict[str, int], _Sizes]], Path]


def _collect(job: _SpoolJob, skips: _SkipCounter, bar: tqdm, buffer: bytearray) -> Iterator[Record]:
    future, spool = job
    source_skips, sizes = future.result()  # re-raises the worker's error (first bad source)
    skips.update(source_skips)
    yield from _read_spool(spool, sizes, buffer)
    bar.update()


def _parallel_records(
    split: _Split, skips: _SkipCounter, bar: tqdm, workers: int, spool_dir: Path
) -> Iterator[Record]:
    """Sources run in worker processes; records come back in source order (spooled)."""
    context = multiprocessing.get_context("spawn")  # never fork a parent that has threads
    pending: deque[_SpoolJob] = deque()
    in_flight = 2 * workers  # sources; their clips wait in spool files, not in memory
    buffer = bytearray()  # one record at a time comes back through it
    with ProcessPoolExecutor(workers, mp_context=context, initializer=reuse_freed_memory) as pool:
        try:
            for index, source in enumerate(split.sources):
                # Source index - in_flight, the last user of this spool, was read back: below
                spool = spool_dir / f"spool-{index % in_flight}.bin"
                job = (split.clip_fn, source, split.seed, index, spool, split.max_group_clips)
                pending.append((pool.submit(_spool_source, *job), spool))
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
    written in source order, so the output is byte-identical for any `workers`. Clips of
    a source that share frames are stored as frame groups (module docstring). At most
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
        split = _Split(sources, clip_fn, seed, max_group_clips=clips_per_shard)  # fits a shard
        if workers > 1:
            records = _parallel_records(split, skips, bar, workers, tmp_dir.parent)
        else:
            records = _serial_records(split, skips, bar)
        shards = _write_records(records, tmp_dir, clips_per_shard)
        used = {**params, "seed": seed, "clips_per_shard": clips_per_shard}  # not workers
        manifest = write_manifest(tmp_dir, shards, used, skips)
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


@dataclass(frozen=True)
class _ClipEntry:
    """Where one clip lies in its shard file, and its meta."""

    name: str
    object_ids: tuple[int, ...]
    shape: tuple[int, int, int, int]  # (T, O, H, W)
    shard: int
    frames_at: int  # file offset of its first frame's pixels
    masks_at: int  # file offset and size of its masks.npy
    masks_size: int


def _owned_frames(infos: Mapping[str, tarfile.TarInfo]) -> dict[str, tarfile.TarInfo]:
    """owner clip -> its frames.npy member, of a shard's members by name."""
    suffix = f"/{FRAMES}"
    return {name[: -len(suffix)]: info for name, info in infos.items() if name.endswith(suffix)}


def _expected_members(clips: Sequence[str], owners: Container[str]) -> list[str]:
    """The member names a shard of `clips` has, given which of them own frames."""
    return [
        f"{clip}/{member}"
        for clip in clips
        for member in ((FRAMES,) if clip in owners else ()) + (MASKS, META)
    ]


def _read_frames_header(file: io.BufferedReader, info: tarfile.TarInfo) -> tuple[int, ...]:
    """(data offset, N, H, W) of an owner's frames.npy: (N, H, W, 3) uint8 in C order."""
    file.seek(info.offset_data)
    version = np.lib.format.read_magic(file)
    read_header = {(1, 0): np.lib.format.read_array_header_1_0}.get(
        version, np.lib.format.read_array_header_2_0
    )
    shape, fortran_order, dtype = read_header(file)
    data_at = file.tell()
    if dtype != np.uint8 or fortran_order or len(shape) != 4 or shape[3] != 3:
        raise ValueError(f"{info.name}: not (N, H, W, 3) uint8 frames in C order")
    if data_at + math.prod(shape) != info.offset_data + info.size:
        raise ValueError(f"{info.name}: its size does not match its shape {shape}")
    return (data_at, *shape[:3])


def _ints(value: Any, length: int) -> bool:
    return isinstance(value, list) and len(value) == length and all(type(v) is int for v in value)


def _clip_entry(
    meta: dict[str, Any], frames: Mapping[str, tuple[int, ...]], shard: int, masks: tarfile.TarInfo
) -> _ClipEntry:
    """A clip's entry from its meta, checked against its owner's frames (`frames`: owner
    -> _read_frames_header); ValueError names the field."""
    ref, shape, ids = meta.get("frames"), meta.get("shape"), meta.get("object_ids")
    if not (isinstance(ref, list) and len(ref) == 2 and isinstance(ref[0], str)):
        raise ValueError(f"field 'frames' {ref!r} is not [owner clip, first row]")
    (owner, row), known = ref, frames.get(ref[0])
    if known is None or type(row) is not int or row < 0:
        raise ValueError(f"field 'frames' {ref!r} names no frames")
    data_at, count, height, width = known
    if not (_ints(shape, 4) and min(shape) >= 0 and shape[2:] == [height, width]):
        raise ValueError(f"field 'shape' {shape!r} does not match its frames")
    if row + shape[0] > count:
        raise ValueError(f"rows {row}..{row + shape[0]} of {owner}'s {count} frames")
    if not _ints(ids, shape[1]):
        raise ValueError(f"field 'object_ids' {ids!r} is not {shape[1]} integers")
    frames_at = data_at + row * height * width * 3
    entry = (tuple(ids), tuple(shape), shard, frames_at, masks.offset_data, masks.size)
    return _ClipEntry(meta["name"], *entry)


def _index_shard(path: Path, record: Mapping[str, Any], shard: int) -> list[_ClipEntry]:
    """The clips of one shard file, checked against its manifest record."""
    mismatch = f"{path}: does not match {MANIFEST}"
    if not _SHARD_RE.fullmatch(str(record["file"])):  # a bare shard-NNNNN.tar, no path
        raise ValueError(f"{mismatch} (not a shard file name): re-run the shard stage")
    if not path.is_file() or path.stat().st_size != record["bytes"]:
        raise ValueError(f"{mismatch} (missing or wrong size): re-run the shard stage")
    entries = []
    with open(path, "rb") as file, tarfile.open(fileobj=file, mode="r:") as tar:
        members = tar.getmembers()  # headers only
        infos = {info.name: info for info in members}
        owned = _owned_frames(infos)
        names = [info.name for info in members]
        if names != _expected_members(record["clips"], owned):  # also: no name twice
            raise ValueError(f"{mismatch} (its clips differ): re-run the shard stage")
        try:
            frames = {owner: _read_frames_header(file, info) for owner, info in owned.items()}
        except ValueError as err:
            raise ValueError(f"{path}: {err}: re-run the shard stage") from None
        for clip in record["clips"]:
            member = f"{clip}/{META}"
            try:
                meta = json.loads(tar.extractfile(infos[member]).read())  # type: ignore[union-attr]
                if not isinstance(meta, dict) or meta.get("name") != clip:
                    raise ValueError("not this clip's meta")
                entries.append(_clip_entry(meta, frames, shard, infos[f"{clip}/{MASKS}"]))
            except ValueError as err:  # json.JSONDecodeError is one
                raise ValueError(f"{path}: {member}: {err}: re-run the shard stage") from None
    return entries


class ShardReader:
    """Random access to the clips of a split directory (what a torch Dataset wraps).

    Clips are indexed once here (tar headers and meta); an item costs two positioned
    reads, its frames and its masks. Files are opened lazily per process, so the reader can
    be handed to DataLoader workers (forked: fresh handles per pid; spawned: handles are
    not pickled).
    """

    def __init__(self, split_dir: Path) -> None:
        self.split_dir = Path(split_dir)
        self.manifest = _read_manifest(self.split_dir)
        records = self.manifest["shards"]
        self._paths = [self.split_dir / r["file"] for r in records]
        self._clips: list[_ClipEntry] = []
        for shard, (path, record) in enumerate(zip(self._paths, records, strict=True)):
            self._clips += _index_shard(path, record, shard)
        self.names: list[str] = [clip.name for clip in self._clips]
        self._fds: dict[int, int] = {}
        self._pid = os.getpid()

    def __len__(self) -> int:
        return len(self.names)

    def __getitem__(self, index: int) -> Clip:
        if not -len(self) <= index < len(self):
            raise IndexError(f"clip index {index} out of range for {len(self)} clips")
        entry = self._clips[index]
        t, _, height, width = entry.shape
        fd = self._fd(entry.shard)
        rgb = bytearray(t * height * width * 3)  # writable, as np.load would give
        complete = os.preadv(fd, [rgb], entry.frames_at) == len(rgb)
        masks = os.pread(fd, entry.masks_size, entry.masks_at)
        if not complete or len(masks) != entry.masks_size:
            raise ValueError(f"{self._paths[entry.shard]}: truncated: re-run the shard stage")
        packed = np.load(io.BytesIO(masks), allow_pickle=False)  # (T, O, H, ceil(W / 8))
        unpacked = np.unpackbits(packed, axis=-1, count=width).view(np.bool_)  # (T, O, H, W)
        frames = np.frombuffer(rgb, np.uint8).reshape(t, height, width, 3)
        return Clip(entry.name, frames, unpacked, entry.object_ids)

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
