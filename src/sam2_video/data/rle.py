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
(`resize_runs`) costs the output size (h * w) plus a table lookup per run, or only the set
pixels when few are. On real COCO images (hundreds of pixels a side, shrunk for training)
this is the big win. It samples exactly the pixels `resize_mask` does (output pixel i takes
source pixel floor((i + 0.5) * in / out)), so the two agree pixel for pixel.

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
    if isinstance(segm, list):  # first: a list is no Mapping, and that check costs more
        return _polygon_problem(segm)
    if isinstance(segm, Mapping):
        return _rle_problem(segm, height, width)
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
    chains = np.empty_like(values)  # chains[i] = values[i] + chains[i - 2], across strings
    chains[0::2], chains[1::2] = np.cumsum(values[0::2]), np.cumsum(values[1::2])
    # A string's own chains start at its 2nd and 3rd run: less what the chains held before
    # (chains[first - 1] for odd places, chains[first] for even ones; 0 before the start).
    first_of = np.repeat(first_run, per_string)
    odd_place = (np.arange(len(values)) - first_of) & 1
    runs = chains - np.concatenate(([0], chains))[first_of + 1 - odd_place]
    runs[first_run] = values[first_run]  # the first run is stored as it is
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
    ends = np.append(first_run[1:], len(runs)).tolist()  # np.split is slow for many parts
    for k, start, end, ok in zip(some, first_run.tolist(), ends, ~unsure & ~negative & covers,
                                 strict=True):  # fmt: skip
        found[k] = runs[start:end] if ok else None
    return found


def _polygon_counts(polygons: list[list[float]], height: int, width: int) -> bytes:
    """Compressed RLE of polygons, rasterised and merged (union) by pycocotools.

    One polygon is not merged: merging a single RLE copies it, so the string is the same.
    """
    rles = mask_utils.frPyObjects(polygons, height, width)
    return rles[0]["counts"] if len(rles) == 1 else mask_utils.merge(rles)["counts"]


def _is_plain_rle(segm: Any, height: int, width: int) -> bool:
    """The common case, checked quickly: {"size": [height, width], "counts": ASCII str}
    (exactly what segmentation_problem accepts as compressed RLE, for these types)."""
    if type(segm) is not dict:
        return False
    size, counts = segm.get("size"), segm.get("counts")
    return (
        type(size) is list
        and len(size) == 2
        and type(size[0]) is int  # not bool, which == compares as an int
        and type(size[1]) is int
        and size == [height, width]
        and type(counts) is str
        and counts.isascii()
    )


def _rle_string_or_runs(segm: Any, height: int, width: int) -> bytes | np.ndarray | None:
    """A structurally valid segmentation as compressed RLE bytes, or its runs when they are
    given uncompressed; None when it is not structurally valid or not ASCII."""
    if _is_plain_rle(segm, height, width):
        return segm["counts"].encode("ascii")
    if segmentation_problem(segm, height, width):
        return None
    if isinstance(segm, list):  # polygons: pycocotools rasterises and merges them
        return _polygon_counts(segm, height, width)
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
    # polygons only on a huge image; else a string (count lists never come back as None)
    counts = _polygon_counts(segm, height, width) if isinstance(segm, list) else segm["counts"]
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
def _sample_counts(
    source: tuple[int, int], size: tuple[int, int]
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Tables that count the pixels resize_mask samples before a column-major source index
    x * H + y: before_column[x] + in_column[x] * before_row[y] (one column is sampled at
    most once as long as w <= W; rows may repeat). (W + 1,), (W + 1,), (H,) int64."""
    (height, width), (out_h, out_w) = source, size
    rows, cols = _sample_rows(height, out_h), _sample_rows(width, out_w)
    before_column = np.searchsorted(cols, np.arange(width + 1)) * out_h
    in_column = np.zeros(width + 1, np.int64)
    in_column[cols] = 1
    before_row = np.searchsorted(rows, np.arange(height))
    for table in (before_column, in_column, before_row):
        table.flags.writeable = False  # shared through the cache
    return before_column, in_column, before_row


@functools.lru_cache(maxsize=16)
def _row_major_index(size: tuple[int, int]) -> np.ndarray:
    """(h * w,) row-major index of each pixel of an (h, w) image listed column by column."""
    height, width = size
    column_major = np.arange(height * width)
    index = column_major % height * width + column_major // height
    index.flags.writeable = False  # shared through the cache
    return index


def _samples_before(
    bounds: np.ndarray, source: tuple[int, int], size: tuple[int, int]
) -> np.ndarray:
    """Pixels resize_mask samples before each column-major source index in `bounds`."""
    if source == size:
        return bounds
    before_column, in_column, before_row = _sample_counts(source, size)
    column, row = np.divmod(bounds, source[0])
    return before_column[column] + in_column[column] * before_row[row]


def _fill_sparse(
    ends: np.ndarray, lengths: np.ndarray, mask_of: np.ndarray, count: int, size: tuple[int, int]
) -> np.ndarray:
    """(count, h, w) bool: True where the given runs of 1s lie, each the `length` samples
    before `end` (numbered column by column within its mask) of mask `mask_of`; the cost
    follows the True pixels, not the output size."""
    pixels = size[0] * size[1]
    starts = ends - lengths - (np.cumsum(lengths) - lengths)  # minus the samples before
    samples = np.arange(int(lengths.sum())) + np.repeat(starts, lengths)  # column by column
    filled = np.zeros(count * pixels, dtype=bool)
    filled[_row_major_index(size)[samples] + np.repeat(mask_of * pixels, lengths)] = True
    return filled.reshape(count, *size)


# Below this share of True samples, masks are filled pixel by pixel rather than expanded
# whole and transposed (which costs about as much as filling 1/16 of the pixels one by one).
_SPARSE_SHARE = 16


def resize_runs(
    all_runs: Sequence[np.ndarray], source: tuple[int, int], size: tuple[int, int]
) -> np.ndarray:
    """(N, h, w) bool masks of N RLEs of a `source` (H, W) image, resized as resize_mask.

    Only the sampled pixels are expanded: the samples before each run boundary are counted
    from lookup tables, so the cost follows the output size, not the source resolution.
    """
    (height, width), (out_h, out_w) = source, size
    if out_w > width:  # repeated columns would break the counting: repeat them after
        masks = resize_runs(all_runs, source, (out_h, width))
        return np.ascontiguousarray(masks[:, :, _sample_rows(width, out_w)])
    counts = np.fromiter(map(len, all_runs), np.int64, len(all_runs))
    runs = np.concatenate(all_runs) if len(all_runs) else np.zeros(0, np.int64)
    mask_index = np.arange(len(all_runs))
    # bounds of mask k lie in [k*H*W, (k+1)*H*W]: count samples within their own mask
    mask_of = np.repeat(mask_index, counts)
    bounds = np.cumsum(runs) - mask_of * (height * width)
    within = _samples_before(bounds, source, size)  # samples before each bound in its mask
    taken = within + mask_of * (out_h * out_w)  # and in the masks before
    per_run = np.empty_like(taken)  # samples that fall in each run
    per_run[:1], per_run[1:] = taken[:1], taken[1:] - taken[:-1]
    first_run = np.cumsum(counts) - counts
    ones = ((np.arange(len(runs)) - first_run[mask_of]) & 1).astype(bool)  # 0s, 1s, 0s, ...
    ones_lengths = per_run[ones]
    if _SPARSE_SHARE * int(ones_lengths.sum()) < len(all_runs) * out_h * out_w:
        return _fill_sparse(within[ones], ones_lengths, mask_of[ones], len(all_runs), size)
    by_column = np.repeat(ones, per_run).reshape(len(all_runs), out_w, out_h)
    return np.ascontiguousarray(by_column.transpose(0, 2, 1))  # C order: clips stack it fast
