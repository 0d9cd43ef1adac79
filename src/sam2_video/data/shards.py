"""Source shards: tar files of encoded frames + JSON metadata with RLE masks, and a manifest.

A split directory holds
    shard-00000.tar, shard-00001.tar, ...   per source (video or static image), in order:
        <source>/meta.json       {"name", "still", "size": [h, w],
                                  "masks": per frame {object id: COCO RLE counts},
                                  "eligible": per frame [object ids that may start a clip]}
        <source>/00000.jpg ...   each frame once, at the stored size: the source file's own
                                 bytes when it needs no resize (JPEG or PNG), else re-encoded
                                 (PNG sources as PNG, others as JPEG at shard.jpeg_quality)
    manifest.json                written last: a directory without it is incomplete

Clips are not stored: the loader makes them when a sample is read (`sampling`). Masks are
COCO RLE (pycocotools' column-major run lengths, compressed string) of the stored size;
an object absent on a frame has no entry there. "eligible" lists the objects of a frame
with area >= shard.min_area at source resolution that survive the resize: a clip starts
only on a frame with one. Sources without such a frame (or videos shorter than
`min_length`: a fixed clip, or for the train split a training window) are skipped and
counted in the manifest, which records min_length.

Written with `tarfile` (fixed mtime/uid/gid/mode, no user names), sources in input order,
so identical inputs give byte-identical shards for any worker count. Nothing is pickled.
"""

from __future__ import annotations

import dataclasses
import functools
import io
import itertools
import json
import multiprocessing
import os
import re
import tarfile
from collections import Counter, deque
from collections.abc import Iterator, Sequence
from concurrent.futures import Executor, Future, ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image
from pycocotools import mask as mask_utils

from sam2_video.data import sampling
from sam2_video.data.clips import Clip
from sam2_video.data.sources import Source
from sam2_video.data.sources.frames import check_size, open_image, resize_frame, target_size
from sam2_video.data.sources.masks import resize_mask
from sam2_video.files import atomic_path, read_json, sha256_file, write_json_atomic
from sam2_video.params import ShardParams, shard_params_from, to_dict

FORMAT = "sam2-video-shards"
VERSION = 3
MANIFEST, META = "manifest.json", "meta.json"
SKIP_SHORT_VIDEO = "video_shorter_than_clip"
SKIP_NO_OBJECT = "no_object_on_first_frame"
_SHARD_RE = re.compile(r"shard-(\d{5,})\.tar")
_FRAME_RE = re.compile(r"(\d{5,})\.(jpg|png)")
FRAMES_PER_TASK = 8  # a worker's unit of work: a few frames of one source


def shard_name(index: int) -> str:
    return f"shard-{index:05d}.tar"


# ---------------------------------------------------------------------------- encoding


@dataclass(frozen=True)
class EncodedFrame:
    """One frame as stored: its file bytes and suffix, and its masks' RLE counts."""

    data: bytes
    suffix: str  # "jpg" or "png"
    size: tuple[int, int]  # stored (h, w)
    rles: dict[str, str]  # object id -> RLE counts at the stored size
    eligible: list[int]  # objects that may start a clip here
    source_bytes: int  # the source file's size


def encode_image(
    path: Path, expected: tuple[int, int], max_side: int, quality: int
) -> tuple[bytes, str, tuple[int, int]]:
    """(bytes, suffix) of an image file at its stored size: the file's own bytes when it
    needs no resize and is a JPEG or PNG, else re-encoded; and the stored (h, w)."""
    image = open_image(path)
    check_size(path, (image.height, image.width), expected)
    size = target_size(*expected, max_side)
    if size == expected and image.format in ("JPEG", "PNG"):
        return path.read_bytes(), "png" if image.format == "PNG" else "jpg", size
    rgb = resize_frame(np.asarray(image.convert("RGB")), size)  # (h, w, 3)
    out = io.BytesIO()
    if image.format == "PNG":  # lossless source: stays lossless
        Image.fromarray(rgb).save(out, "PNG")
        return out.getvalue(), "png", size
    Image.fromarray(rgb).save(out, "JPEG", quality=quality)
    return out.getvalue(), "jpg", size


def encode_masks(
    masks: dict[int, np.ndarray], size: tuple[int, int], min_area: int
) -> tuple[dict[str, str], list[int]]:
    """RLE counts of each object's mask resized to `size` (absent ones left out), and the
    ids of those with area >= min_area at source resolution (eligible to start a clip)."""
    rles, eligible = {}, []
    for object_id in sorted(masks):
        resized = resize_mask(masks[object_id], size)  # (h, w) bool
        if not resized.any():
            continue
        rle = mask_utils.encode(np.asfortranarray(resized, dtype=np.uint8))
        rles[str(object_id)] = rle["counts"].decode("ascii")
        if masks[object_id].sum() >= max(min_area, 1):
            eligible.append(object_id)
    return rles, eligible


def encode_frames(source: Source, frames: range, p: ShardParams) -> list[EncodedFrame]:
    """Worker task: frames `frames` of `source`, encoded."""
    encoded = []
    for index in frames:
        path = source.frame_path(index)
        data, suffix, size = encode_image(
            path, source.frame_size(index), p.max_side, p.jpeg_quality
        )
        rles, eligible = encode_masks(source.frame_masks(index), size, p.min_area)
        encoded.append(EncodedFrame(data, suffix, size, rles, eligible, path.stat().st_size))
    return encoded


def _skip_reason(source: Source, frames: Sequence[EncodedFrame], clip_length: int) -> str | None:
    """Why no clip can be made of a source, or None."""
    last_start = 0 if source.still else source.num_frames - clip_length
    if any(frame.eligible for frame in frames[: last_start + 1]):
        return None
    return SKIP_NO_OBJECT


def _source_members(source: Source, frames: Sequence[EncodedFrame]) -> list[tuple[str, bytes]]:
    """A source's tar members: meta.json, then its frames in order."""
    for index, frame in enumerate(frames):
        if frame.size != frames[0].size:
            raise ValueError(
                f"{source.frame_path(index)}: frame size {frame.size} differs from "
                f"{frames[0].size} of {source.frame_path(0)} in video {source.name!r}: "
                "frames of a video must share one size"
            )
    meta = {
        "name": source.name,
        "still": bool(source.still),
        "size": list(frames[0].size),
        "masks": [f.rles for f in frames],
        "eligible": [f.eligible for f in frames],
    }
    members = [(f"{source.name}/{META}", json.dumps(meta, sort_keys=True).encode())]
    for index, frame in enumerate(frames):
        members.append((f"{source.name}/{index:05d}.{frame.suffix}", frame.data))
    return members


def _check_name(name: str) -> None:
    if not name or name in (".", "..") or any(c in name for c in "/\\\0"):
        raise ValueError(f"source name {name!r} is not a file-safe name (no '/', '\\', NUL)")


# ---------------------------------------------------------------------------- building


@dataclass
class _Stored:
    """One source's outcome: its tar members, or why it was skipped."""

    name: str
    members: list[tuple[str, bytes]] | None
    skip: str | None
    source_bytes: int = 0


class _InOrder:
    """Tasks (source, frames) run on an executor, at most `ahead` at a time; results are
    taken in submission order."""

    def __init__(self, pool: Executor | None, params: ShardParams, ahead: int) -> None:
        self.pool, self.params, self.ahead = pool, params, ahead
        self.pending: deque[Future] = deque()

    def submit(self, source: Source, frames: range) -> Iterator[list[EncodedFrame]]:
        """Queue a task; yields the results of the oldest ones while too many wait."""
        if self.pool is None:
            yield encode_frames(source, frames, self.params)
            return
        self.pending.append(self.pool.submit(encode_frames, source, frames, self.params))
        while len(self.pending) > self.ahead:
            yield self.pending.popleft().result()  # re-raises a worker's error

    def drain(self) -> Iterator[list[EncodedFrame]]:
        while self.pending:
            yield self.pending.popleft().result()


def _too_short(source: Source, clip_length: int) -> bool:
    return not source.still and source.num_frames < clip_length


def _tasks(sources: Sequence[Source], min_length: int) -> Iterator[tuple[int, range]]:
    """(source index, frames) of every task, sources shorter than a clip left out."""
    for index, source in enumerate(sources):
        if not _too_short(source, min_length):
            for first in range(0, source.num_frames, FRAMES_PER_TASK):
                yield index, range(first, min(first + FRAMES_PER_TASK, source.num_frames))


def _stored_sources(
    sources: Sequence[Source], p: ShardParams, pool: Executor | None, ahead: int, min_length: int
) -> Iterator[_Stored]:
    """Every source's outcome, in input order; one source's frames held at a time."""
    results = _results(_InOrder(pool, p, ahead), sources, _tasks(sources, min_length))
    for source in sources:
        _check_name(source.name)
        if _too_short(source, min_length):
            yield _Stored(source.name, None, SKIP_SHORT_VIDEO)
            continue
        frames: list[EncodedFrame] = []
        while len(frames) < source.num_frames:
            frames += next(results)
        skip = _skip_reason(source, frames, min_length)
        members = None if skip else _source_members(source, frames)
        yield _Stored(source.name, members, skip, sum(f.source_bytes for f in frames))


def _results(queue: _InOrder, sources: Sequence[Source], tasks) -> Iterator[list[EncodedFrame]]:
    for index, frames in tasks:
        yield from queue.submit(sources[index], frames)
    yield from queue.drain()


def _add_member(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size, info.mtime, info.mode, info.uid, info.gid = len(data), 0, 0o644, 0, 0
    info.uname = info.gname = ""
    tar.addfile(info, io.BytesIO(data))


def _shard_record(path: Path, names: list[str]) -> dict[str, Any]:
    return {
        "file": path.name,
        "num_sources": len(names),
        "bytes": path.stat().st_size,
        "sha256": sha256_file(path),
        "sources": names,
    }


def _kept(outcomes: Iterator[_Stored], skips: Counter, totals: Counter) -> Iterator[_Stored]:
    """The outcomes to store (skips counted), checked for twice-used names."""
    seen = set()
    for outcome in outcomes:
        if outcome.skip:
            skips[outcome.skip] += 1
            continue
        if outcome.name in seen:
            raise ValueError(f"source name {outcome.name!r} occurs twice in one split")
        seen.add(outcome.name)
        totals["source_bytes"] += outcome.source_bytes
        yield outcome


def _add_source(tar: tarfile.TarFile, stored: _Stored) -> str:
    for name, data in stored.members or ():
        _add_member(tar, name, data)
    return stored.name


def _write_shards(outcomes: Iterator[_Stored], out_dir: Path, p: ShardParams) -> dict[str, Any]:
    """Shard files of the stored sources (sources_per_shard each), each source written as
    it arrives (memory holds one source, not a shard); skips and sizes."""
    records, skips, totals = [], Counter(), Counter()
    kept = _kept(outcomes, skips, totals)
    while (first := next(kept, None)) is not None:
        path = out_dir / shard_name(len(records))
        with tarfile.open(path, "w", format=tarfile.PAX_FORMAT, encoding="utf-8") as tar:
            group = itertools.chain([first], itertools.islice(kept, p.sources_per_shard - 1))
            names = [_add_source(tar, stored) for stored in group]
        records.append(_shard_record(path, names))
    skipped = dict(sorted(skips.items()))
    return {"shards": records, "skips": skipped, "source_bytes": totals["source_bytes"]}


def build_split(
    sources: Sequence[Source],
    out_dir: Path,
    p: ShardParams,
    *,
    progress: bool = False,
    min_length: int | None = None,
) -> dict[str, Any]:
    """Store `sources` as shards in out_dir (atomically, as a whole); the manifest.

    min_length: the fewest frames a stored video has (default p.clip_length, what fixed
    clips need); the train split passes train.clip_length, so any video a training window
    fits in trains. Shorter videos, and videos without an object on a frame a window of
    min_length can start on, are skipped and counted (manifest "skips").
    Frames are encoded in p.workers processes (a few frames per task, at most 2 tasks per
    worker waiting), written in source order: byte-identical output for any worker count.
    Memory holds one source's encoded files at a time. A failed build leaves any previous
    out_dir as it was.
    """
    from tqdm import tqdm

    with atomic_path(out_dir) as tmp_dir:
        tmp_dir.mkdir(parents=True)
        pool = None
        if p.workers > 1:  # spawn: never fork a parent that has threads
            context = multiprocessing.get_context("spawn")
            pool = ProcessPoolExecutor(p.workers, mp_context=context)
        try:
            length = p.clip_length if min_length is None else min_length
            outcomes = _stored_sources(sources, p, pool, 2 * p.workers, length)
            bar = tqdm(
                outcomes,
                total=len(sources),
                desc=f"shard {Path(out_dir).name}",
                disable=not progress,
            )
            written = _write_shards(iter(bar), tmp_dir, p)
        finally:
            if pool is not None:
                pool.shutdown(cancel_futures=True)
        written["min_length"] = length
        manifest = write_manifest(tmp_dir, written, p)
    return manifest


def write_manifest(out_dir: Path, written: dict[str, Any], p: ShardParams) -> dict[str, Any]:
    """Write manifest.json (atomically, last): counts, sizes, hashes, params, skip reasons."""
    records = written["shards"]
    manifest = {
        "format": FORMAT,
        "version": VERSION,
        "num_shards": len(records),
        "num_sources": sum(r["num_sources"] for r in records),
        "total_bytes": sum(r["bytes"] for r in records),
        "source_bytes": written["source_bytes"],
        "shards": records,
        "params": {k: v for k, v in to_dict(p).items() if k != "workers"},
        "skips": written["skips"],
        "min_length": written.get("min_length", p.clip_length),
    }
    write_json_atomic(Path(out_dir) / MANIFEST, manifest)
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
class _SourceEntry:
    """Where one source lies in its shard file, and what clips can be made of it."""

    name: str
    still: bool
    size: tuple[int, int]  # stored (h, w)
    eligible: tuple[tuple[int, ...], ...]  # per frame: objects that may start a clip
    shard: int
    meta: tarfile.TarInfo
    frames: tuple[tarfile.TarInfo, ...]


def _is_ints(value: Any) -> bool:
    return isinstance(value, list) and all(type(v) is int for v in value)


def _check_meta(meta: Any, name: str) -> None:
    """ValueError naming the first field of a source's meta that is not as written."""
    if not isinstance(meta, dict) or meta.get("name") != name:
        raise ValueError("not this source's meta")
    if type(meta.get("still")) is not bool:
        raise ValueError(f"field 'still' {meta.get('still')!r} is not true/false")
    if not (_is_ints(meta.get("size")) and len(meta["size"]) == 2 and min(meta["size"]) > 0):
        raise ValueError(f"field 'size' {meta.get('size')!r} is not [height, width]")
    masks, eligible = meta.get("masks"), meta.get("eligible")
    if not (isinstance(masks, list) and masks and all(isinstance(m, dict) for m in masks)):
        raise ValueError("field 'masks' is not a list of {object id: RLE counts}, one a frame")
    if not (isinstance(eligible, list) and len(eligible) == len(masks)):
        raise ValueError("field 'eligible' is not a list of object ids per frame")
    if not all(_is_ints(ids) for ids in eligible):
        raise ValueError("field 'eligible' is not a list of object ids per frame")


def _source_entry(tar: tarfile.TarFile, members: list[tarfile.TarInfo], name: str, shard: int):
    """The entry of source `name`, whose members are `members` (meta.json, then frames)."""
    if not members or members[0].name != f"{name}/{META}":
        raise ValueError(f"{name}/{META}: missing or not the source's first member")
    meta = json.loads(tar.extractfile(members[0]).read())  # type: ignore[union-attr]
    _check_meta(meta, name)
    frames = members[1:]
    expected = [f"{name}/{index:05d}" for index in range(len(meta["masks"]))]
    found = [info.name.rsplit(".", 1)[0] for info in frames]
    if found != expected or not all(_FRAME_RE.fullmatch(i.name.split("/")[-1]) for i in frames):
        raise ValueError(f"{name}: its frame files are not {len(expected)} frames in order")
    eligible = tuple(tuple(ids) for ids in meta["eligible"])
    return _SourceEntry(
        name, meta["still"], tuple(meta["size"]), eligible, shard, members[0], tuple(frames)
    )


def _index_shard(path: Path, record: dict[str, Any], shard: int) -> list[_SourceEntry]:
    """The sources of one shard file, checked against its manifest record."""
    mismatch = f"{path}: does not match {MANIFEST}"
    if not _SHARD_RE.fullmatch(str(record["file"])):  # a bare shard-NNNNN.tar, no path
        raise ValueError(f"{mismatch} (not a shard file name): re-run the shard stage")
    if not path.is_file() or path.stat().st_size != record["bytes"]:
        raise ValueError(f"{mismatch} (missing or wrong size): re-run the shard stage")
    with tarfile.open(path, "r:") as tar:
        by_source: dict[str, list[tarfile.TarInfo]] = {}
        for info in tar.getmembers():  # headers only
            by_source.setdefault(info.name.split("/")[0], []).append(info)
        if list(by_source) != record["sources"]:
            raise ValueError(f"{mismatch} (its sources differ): re-run the shard stage")
        try:
            return [_source_entry(tar, by_source[name], name, shard) for name in by_source]
        except ValueError as err:  # json.JSONDecodeError is one
            raise ValueError(f"{path}: {err}: re-run the shard stage") from None


class StoredSource:
    """One stored source, decoded on demand: frames (T, h, w, 3) uint8, masks (T, O, h, w)."""

    def __init__(self, entry: _SourceEntry, meta: dict[str, Any], read) -> None:
        self.name, self.still, self.size = entry.name, entry.still, entry.size
        self.eligible = entry.eligible
        self._entry, self._rles, self._read = entry, meta["masks"], read

    @property
    def num_frames(self) -> int:
        return len(self._rles)

    def frames(self, indices: Sequence[int]) -> np.ndarray:
        """(T, h, w, 3) uint8 RGB of frames `indices`."""
        out = np.empty((len(indices), *self.size, 3), dtype=np.uint8)
        for t, index in enumerate(indices):
            info = self._entry.frames[index]
            with Image.open(io.BytesIO(self._read(info))) as image:
                if (image.height, image.width) != self.size:
                    raise ValueError(f"{info.name}: not {self.size} (HxW): re-run the shard stage")
                out[t] = image if image.mode == "RGB" else image.convert("RGB")
        return out

    def masks(self, indices: Sequence[int], object_ids: Sequence[int]) -> np.ndarray:
        """(T, O, h, w) bool masks of `object_ids` on frames `indices` (empty where absent)."""
        out = np.zeros((len(indices), len(object_ids), *self.size), dtype=bool)
        where, rles = [], []  # (t, k) and RLE of every mask present, decoded in one call
        for t, index in enumerate(indices):
            for k, object_id in enumerate(object_ids):
                counts = self._rles[index].get(str(object_id))
                if counts is not None:
                    where.append((t, k))
                    rles.append({"size": list(self.size), "counts": counts.encode()})
        if rles:
            decoded = mask_utils.decode(rles).transpose(2, 0, 1)  # (N, h, w) uint8
            frames, objects = zip(*where, strict=True)
            out[list(frames), list(objects)] = decoded.view(bool)
        return out


class ShardReader:
    """A split directory: its stored sources, and its fixed clips.

    reader[i] is the i-th fixed clip (fixed windows, fixed motion per image: `sampling`),
    reader.names their names: what validation, evaluate, render and export-davis read.
    Training draws clips with `training_clip(index, rng)` from source index < num_sources,
    `training_length` frames long (default: the shards' clip_length, which fixed clips have).
    Sources are indexed once here (tar headers and meta); files are opened lazily per
    process, so the reader can be handed to DataLoader workers (forked or spawned).
    """

    def __init__(self, split_dir: Path, training_length: int | None = None) -> None:
        self.split_dir = Path(split_dir)
        self.manifest = _read_manifest(self.split_dir)
        try:
            self.params = shard_params_from(self.manifest["params"])
        except (KeyError, TypeError, ValueError) as err:
            raise ValueError(
                f"{self.split_dir / MANIFEST}: params: {err}: re-run the shard stage"
            ) from None
        length = training_length or self.params.clip_length
        stored = min(self.params.clip_length, self.manifest.get("min_length", length))
        # a split of whole validation videos is read for its fixed clips only
        if training_length is not None and length > stored:
            raise ValueError(
                f"{self.split_dir}: training clips of {length} frames asked for, but the shards "
                f"promise only {stored}: set train.clip_length <= {stored}, or raise "
                "shard.clip_length (or train.clip_length) and re-run the shard stage"
            )
        self._training_params = dataclasses.replace(self.params, clip_length=length)
        records = self.manifest["shards"]
        self._paths = [self.split_dir / r["file"] for r in records]
        self._sources: list[_SourceEntry] = []
        for shard, (path, record) in enumerate(zip(self._paths, records, strict=True)):
            self._sources += _index_shard(path, record, shard)
        self._fixed = sampling.fixed_clip_starts(self._sources, self.params)  # (source, start)
        self.names = [
            sampling.clip_name(self._sources[i], start, self.params) for i, start in self._fixed
        ]
        self._fds: dict[int, int] = {}
        self._pid = os.getpid()

    @property
    def num_sources(self) -> int:
        return len(self._sources)

    def source(self, index: int) -> StoredSource:
        entry = self._sources[index]
        meta = json.loads(self._read(entry.shard, entry.meta))
        return StoredSource(entry, meta, functools.partial(self._read, entry.shard))

    def training_clip(self, index: int, rng: np.random.Generator) -> Clip:
        """A clip of source `index` drawn with `rng` (`sampling.training_clip`)."""
        return sampling.training_clip(self.source(index), self._training_params, rng)

    def __len__(self) -> int:
        return len(self._fixed)

    def __getitem__(self, index: int) -> Clip:
        if not -len(self) <= index < len(self):
            raise IndexError(f"clip index {index} out of range for {len(self)} clips")
        source, start = self._fixed[index]
        return sampling.fixed_clip(self.source(source), source, start, self.params)

    def stored_files(self, index: int) -> list[tuple[bytes, str]] | None:
        """The stored files (bytes, suffix "jpg"/"png") of fixed clip `index`'s frames, as
        the clip's frames decode from them; None for a pseudo-video (its frames are made)."""
        source, start = self._fixed[index]
        entry = self._sources[source]
        if entry.still:
            return None
        whole = sampling.whole_video_length(entry, self.params)
        length = self.params.clip_length if self.params.val_windows else whole
        infos = entry.frames[start : start + length]
        return [(self._read(entry.shard, i), i.name.rsplit(".", 1)[1]) for i in infos]

    def _read(self, shard: int, info: tarfile.TarInfo) -> bytes:
        data = os.pread(self._fd(shard), info.size, info.offset_data)
        if len(data) != info.size:
            raise ValueError(f"{self._paths[shard]}: truncated: re-run the shard stage")
        return data

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
