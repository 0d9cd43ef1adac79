"""COCO segmentations as run lengths: checked, measured and resized without decoding masks.

COCO RLE order: a mask's pixels are read column-major (down column 0, then column 1, ...)
and listed as run lengths of alternating 0s and 1s, always starting with 0s (a mask whose
pixel (0, 0) is set starts with a run of length 0); the runs sum to height * width.
Uncompressed RLE gives the runs as a list of ints; compressed RLE packs them into an ASCII
string (pycocotools' rleToString: 5 bits per character offset from '0', bit 0x20 = more
characters follow, bit 0x10 of a value's last character = negative, runs after the third
stored as the difference to the run two before). Polygons are rasterised to RLE by
pycocotools.

Why in bulk: clips hold many small masks, and what a small mask costs is the fixed price of
each numpy call made for it, not its pixels. So `bulk_segmentation_runs` joins the strings
of many masks and parses them all in a few numpy calls; anything the fast path does not
vouch for goes to the exact one-at-a-time parser (`segmentation_runs`), which also names
the problem of bad input.

Why resize from runs: decoding a mask costs its source size (H * W); resizing its runs
(`resize_runs`) costs the output size (h * w) plus a binary search per run. On real COCO
images (hundreds of pixels a side, shrunk for training) this is the big win. It samples
exactly the pixels `resize_mask` does (output pixel i takes source pixel
floor((i + 0.5) * in / out)), so the two agree pixel for pixel.

This module knows only the segmentation formats: the COCO JSON readers (coco, motion,
check) import it, never the other way round.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np
from pycocotools import mask as mask_utils


# ---------------------------------------------------------------------------- structure checks


def is_int(value: Any) -> bool:
    """Whether a JSON value is an integer (JSON true/false load as bool, an int subclass)."""
    return isinstance(value, int) and not isinstance(value, bool)


def _all_of_types(values: list[Any], types: set[type], check: Callable[[Any], bool]) -> bool:
    """all(map(check, values)); JSON values of exactly `types` (which pass) are seen in C."""
    return set(map(type, values)) <= types or all(map(check, values))


def _rle_problem(segm: Mapping[str, Any], height: int, width: int) -> str | None:
    size = segm.get("size")
    if not (isinstance(size, list | tuple) and len(size) == 2 and all(map(is_int, size))):
        return f"RLE 'size' is {size!r}, expected [height, width]"
    if list(size) != [height, width]:
        return (
            f"RLE size {list(size)} disagrees with the image's [height, width] "
            f"[{height}, {width}]: fix the image entry or re-encode the mask"
        )
    counts = segm.get("counts")
    if isinstance(counts, list):
        if not _all_of_types(counts, {int}, is_int) or min(counts, default=0) < 0:
            return "uncompressed RLE 'counts' must be non-negative integers"
        if sum(counts) != height * width:
            return f"RLE counts sum to {sum(counts)}, expected height*width={height * width}"
    elif not isinstance(counts, str | bytes):
        return f"RLE 'counts' is {type(counts).__name__}, expected a string or list of ints"
    return None


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float)


def _polygon_problem(segm: list[Any]) -> str | None:
    if not segm:
        return "is an empty polygon list: remove the annotation or give a mask"
    for k, poly in enumerate(segm):
        if not isinstance(poly, list) or not _all_of_types(poly, {int, float}, _is_number):
            return f"polygon {k} is not a flat list of numbers [x1, y1, x2, y2, ...]"
        if len(poly) < 6 or len(poly) % 2:
            return (
                f"polygon {k} has {len(poly)} coordinates; a polygon needs at least 3 "
                "points (6 numbers, x/y pairs): fix or drop it"
            )
    return None


def segmentation_problem(segm: Any, height: int, width: int) -> str | None:
    """Why `segm` is not a usable COCO segmentation of an image (cheap structural check)."""
    if isinstance(segm, Mapping):
        return _rle_problem(segm, height, width)
    if isinstance(segm, list):
        return _polygon_problem(segm)
    return f"is {type(segm).__name__}, expected an RLE dict or a list of polygons"


# ---------------------------------------------------------------------------- one string at a time


def _rle_string_counts(counts: str | bytes) -> list[int]:
    """Run lengths of a compressed RLE string (port of pycocotools' rleFrString)."""
    data = counts.encode("ascii") if isinstance(counts, str) else counts
    runs: list[int] = []
    pos = 0
    while pos < len(data):
        value, shift, more = 0, 0, True
        while more:
            if pos >= len(data):
                raise ValueError("ends in the middle of a run length")
            char = data[pos] - 48
            value |= (char & 0x1F) << shift
            more = bool(char & 0x20)
            pos, shift = pos + 1, shift + 5
            if not more and char & 0x10:
                value |= -1 << shift  # sign extension, as the C code does
        if len(runs) > 2:
            value += runs[-2]  # runs after the third are stored as deltas
        runs.append(value)
    return runs


def check_compressed_counts(counts: str | bytes, height: int, width: int) -> None:
    """Raise ValueError naming the problem unless a compressed RLE string is valid for
    an image of height x width (parses, runs non-negative and summing to H*W)."""
    # pycocotools silently returns uninitialised pixels when the runs fall short: check first.
    try:
        runs = _rle_string_counts(counts)
    except (ValueError, UnicodeEncodeError) as err:
        raise ValueError(
            f"field 'segmentation': compressed RLE counts are corrupt ({err})"
        ) from None
    if min(runs, default=0) < 0 or sum(runs) != height * width:
        raise ValueError(
            f"field 'segmentation': compressed RLE runs sum to {sum(runs)} (or are negative), "
            f"expected height*width={height * width}: re-encode the mask"
        )


# ---------------------------------------------------------------------------- RLE runs, in bulk


_MAX_RUN_CHARS = 7  # 35 bits: more than any image's pixel count, and int64 sums stay exact
_MAX_BULK_CHARS = 1 << 27  # so that 2**35 * chars < 2**63: the bulk sums cannot overflow


def _any_per_string(flags: np.ndarray, string_of: np.ndarray, count: int) -> np.ndarray:
    """(count,) bool: whether any of each string's flagged items is set."""
    return np.bincount(string_of[flags], minlength=count) > 0


def _run_values(codes: np.ndarray, sizes: np.ndarray) -> tuple[np.ndarray, ...]:
    """Decoded run-length values (still delta-coded) of concatenated RLE strings.

    Returns values, the string of each value and the strings whose characters the fast
    path does not vouch for (outside '0'..'o', a cut-off last value, one longer than
    _MAX_RUN_CHARS characters); their values are zeroed.
    """
    count = len(sizes)
    string_of_char = np.repeat(np.arange(count), sizes)
    last_chars = np.cumsum(sizes) - 1
    ends_at = codes < 32  # no 0x20 continuation bit: the character ends a value
    unsure = _any_per_string(codes > 63, string_of_char, count) | ~ends_at[last_chars]
    ends_at[last_chars] = True  # never let a value run into the next string
    ends = np.flatnonzero(ends_at)
    starts = np.concatenate(([0], ends[:-1] + 1))
    chars = np.minimum(ends - starts + 1, _MAX_RUN_CHARS + 1)
    string_of = string_of_char[ends]
    unsure |= _any_per_string(chars > _MAX_RUN_CHARS, string_of, count)
    position = np.minimum(np.arange(len(codes)) - np.repeat(starts, ends - starts + 1), 7)
    values = np.add.reduceat((codes & 0x1F).astype(np.int64) << (5 * position), starts)
    negative = (codes[ends] & 0x10) > 0
    values -= negative.astype(np.int64) << (5 * chars)  # the C code's sign extension
    values[unsure[string_of]] = 0
    return values, string_of, unsure


def _undelta(values: np.ndarray, string_of: np.ndarray, count: int) -> tuple[np.ndarray, ...]:
    """Runs from values: after a string's third, each value is a delta to the run two before.

    Returns the runs and the index of each string's first run.
    """
    per_string = np.bincount(string_of, minlength=count)
    first_run = np.cumsum(per_string) - per_string
    index = np.arange(len(values)) - np.repeat(first_run, per_string)  # within its string
    runs = values.copy()
    for same_parity in (index % 2 == 1, (index % 2 == 0) & (index > 0)):
        part = np.where(same_parity, values, 0)
        total = np.cumsum(part)
        before = np.repeat(total[first_run] - part[first_run], per_string)
        runs[same_parity] = (total - before)[same_parity]
    return runs, first_run


def _bulk_string_runs(strings: Sequence[bytes], pixels: Sequence[int]) -> list[np.ndarray | None]:
    """_rle_string_counts of many compressed RLE strings at once, checked against their
    image's pixel count; None for any string that is not a valid RLE as pycocotools writes
    it (the exact parser then names the problem)."""
    found: list[np.ndarray | None] = [None] * len(strings)  # empty strings stay None
    some = [k for k, string in enumerate(strings) if string]
    sizes = np.fromiter((len(strings[k]) for k in some), np.int64, len(some))
    if not some or sizes.sum() > _MAX_BULK_CHARS:
        return found  # the exact parser handles them one by one
    codes = np.frombuffer(b"".join(strings[k] for k in some), np.uint8) - np.uint8(48)
    values, string_of, unsure = _run_values(codes, sizes)  # below '0' wrapped past 63
    runs, first_run = _undelta(values, string_of, len(some))
    negative = np.minimum.reduceat(runs, first_run) < 0
    covers = np.add.reduceat(runs, first_run) == np.array([pixels[k] for k in some])
    parts = np.split(runs, first_run[1:])
    for k, part, ok in zip(some, parts, ~unsure & ~negative & covers, strict=True):
        found[k] = part if ok else None
    return found


def _rle_string_or_runs(segm: Any, height: int, width: int) -> bytes | np.ndarray | None:
    """A structurally valid segmentation as compressed RLE bytes, or its runs when they are
    given uncompressed; None when it is not structurally valid or not ASCII."""
    if segmentation_problem(segm, height, width):
        return None
    if isinstance(segm, list):  # polygons: pycocotools rasterises and merges them
        return mask_utils.merge(mask_utils.frPyObjects(segm, height, width))["counts"]
    counts = segm["counts"]
    if isinstance(counts, list):
        return np.array(counts, dtype=np.int64)  # checked: ints >= 0 summing to H*W
    if isinstance(counts, bytes) or counts.isascii():
        return counts if isinstance(counts, bytes) else counts.encode("ascii")
    return None


def bulk_segmentation_runs(
    segms: Sequence[Any], sizes: Sequence[tuple[int, int]]
) -> list[np.ndarray | None]:
    """(R,) int64 runs of each segmentation (of an image of size (H, W)), many at once;
    None for one that is invalid or unusual: `segmentation_runs` raises or parses it."""
    found: list[np.ndarray | None] = [None] * len(segms)
    strings, owners = [], []
    for k, (segm, (height, width)) in enumerate(zip(segms, sizes, strict=True)):
        data = _rle_string_or_runs(segm, height, width)
        if isinstance(data, bytes):
            strings.append(data)
            owners.append(k)
        else:
            found[k] = data
    pixels = [sizes[k][0] * sizes[k][1] for k in owners]
    for k, runs in zip(owners, _bulk_string_runs(strings, pixels), strict=True):
        found[k] = runs
    return found


def segmentation_runs(segm: Any, height: int, width: int) -> np.ndarray:
    """(R,) int64 run lengths of a COCO segmentation: compressed/uncompressed RLE or polygons.

    The runs are validated (non-negative, summing to height*width); bad input raises
    ValueError naming the field and the problem.
    """
    (runs,) = bulk_segmentation_runs([segm], [(height, width)])
    if runs is not None:
        return runs
    problem = segmentation_problem(segm, height, width)
    if problem:
        raise ValueError(f"field 'segmentation' {problem}")
    if isinstance(segm, list):  # only a huge image takes polygons here
        counts = mask_utils.merge(mask_utils.frPyObjects(segm, height, width))["counts"]
    else:
        counts = segm["counts"]  # a string: count lists never come back as None
    check_compressed_counts(counts, height, width)  # raises, naming the problem
    return np.array(_rle_string_counts(counts), dtype=np.int64)  # valid, beyond the fast path


def runs_area(runs: np.ndarray) -> int:
    """Pixels of an RLE mask (its runs of 1s)."""
    return int(runs[1::2].sum())


def union_area(all_runs: Sequence[np.ndarray]) -> int:
    """Pixels of the union of RLE masks of one image (as pycocotools merge + area)."""
    starts, ends = [], []
    for runs in all_runs:
        bounds = np.cumsum(runs)  # a run of 1s covers [bounds[2k], bounds[2k + 1])
        starts.append(bounds[0 : len(bounds) - 1 : 2])
        ends.append(bounds[1::2])
    order = np.argsort(np.concatenate(starts), kind="stable")
    start, end = np.concatenate(starts)[order], np.concatenate(ends)[order]
    reach = np.maximum.accumulate(end)  # in start order, everything before it is counted
    counted_to = np.maximum(start, np.concatenate(([0], reach[:-1])))
    return int(np.maximum(end - counted_to, 0).sum())


# ---------------------------------------------------------------------------- whole masks


def decode_segmentation(segm: Any, height: int, width: int) -> np.ndarray:
    """(H, W) bool mask of a COCO segmentation: compressed/uncompressed RLE or polygons.

    Decoded by pycocotools, one annotation at a time (clips go through segmentation_runs
    and resize_runs instead, which never decode a mask at full resolution).
    """
    problem = segmentation_problem(segm, height, width)
    if problem:
        raise ValueError(f"field 'segmentation' {problem}")
    if isinstance(segm, list):
        rle = mask_utils.merge(mask_utils.frPyObjects(segm, height, width))
    elif isinstance(segm["counts"], list):
        rle = mask_utils.frPyObjects(dict(segm), height, width)
    else:
        check_compressed_counts(segm["counts"], height, width)
        rle = {"size": [height, width], "counts": segm["counts"]}
    return mask_utils.decode(rle).astype(bool)


# ---------------------------------------------------------------------------- resizing


def _sample_rows(in_len: int, out_len: int) -> np.ndarray:
    """Source index of each output pixel along one axis: floor((i + 0.5) * in / out)."""
    return ((2 * np.arange(out_len) + 1) * in_len) // (2 * out_len)


def resize_mask(mask: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """(H, W) mask (bool, or an index map) -> (h, w), nearest neighbour at pixel centres.

    Output pixel i takes source pixel floor((i + 0.5) * H / h), in exact integer arithmetic
    (PIL's NEAREST rounds in float and can pick the neighbour), same for columns.
    """
    (in_h, in_w), (out_h, out_w) = mask.shape, size
    if (in_h, in_w) == (out_h, out_w):
        return mask
    rows, cols = _sample_rows(in_h, out_h), _sample_rows(in_w, out_w)
    return mask[rows[:, None], cols[None, :]]


@functools.lru_cache(maxsize=16)
def _sample_positions(source: tuple[int, int], size: tuple[int, int]) -> np.ndarray:
    """(w * h,) column-major source indices that resize_mask samples, by column: ascending
    as long as no column is sampled twice (w <= W)."""
    rows, cols = _sample_rows(source[0], size[0]), _sample_rows(source[1], size[1])
    positions = (cols[:, None] * source[0] + rows[None, :]).reshape(-1)
    positions.flags.writeable = False  # shared through the cache
    return positions


def resize_runs(
    all_runs: Sequence[np.ndarray], source: tuple[int, int], size: tuple[int, int]
) -> np.ndarray:
    """(N, h, w) bool masks of N RLEs of a `source` (H, W) image, resized as resize_mask.

    Only the sampled pixels are expanded: each run's share of them is found by a binary
    search per run, so the cost follows the output size, not the source resolution.
    """
    (height, width), (out_h, out_w) = source, size
    if out_w > width:  # repeated columns would break the search order: repeat them after
        masks = resize_runs(all_runs, source, (out_h, width))
        return np.ascontiguousarray(masks[:, :, _sample_rows(width, out_w)])
    counts = np.fromiter(map(len, all_runs), np.int64, len(all_runs))
    runs = np.concatenate(all_runs) if len(all_runs) else np.zeros(0, np.int64)
    mask_index = np.arange(len(all_runs))
    if source == size:
        per_run = runs
    else:  # bounds of mask k lie in [k*H*W, (k+1)*H*W]: search them within their own mask
        bounds = np.cumsum(runs) - np.repeat(mask_index * (height * width), counts)
        taken = np.searchsorted(_sample_positions(source, size), bounds)
        taken += np.repeat(mask_index * (out_h * out_w), counts)  # samples of masks before
        per_run = np.empty_like(taken)  # samples that fall in each run
        per_run[:1], per_run[1:] = taken[:1], taken[1:] - taken[:-1]
    first_run = np.cumsum(counts) - counts
    ones = (np.arange(len(runs)) - np.repeat(first_run, counts)) % 2 == 1  # 0s, 1s, 0s, ...
    by_column = np.repeat(ones, per_run).reshape(len(all_runs), out_w, out_h)
    return np.ascontiguousarray(by_column.transpose(0, 2, 1))  # C order: clips stack it fast
