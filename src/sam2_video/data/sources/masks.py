"""COCO segmentations: checked, decoded (pycocotools) and resized to the stored size.

COCO RLE order: a mask's pixels are read column-major and listed as run lengths of
alternating 0s and 1s, starting with 0s; the runs sum to height * width. Uncompressed RLE
gives the runs as a list of ints, compressed RLE packs them into an ASCII string
(pycocotools' rleToString). pycocotools decodes either without checking that the runs fit
the image, so a compressed string is parsed here first (`check_compressed_counts`).

This module knows only the segmentation formats: the sources and the validator import it.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
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


def decode_segmentation(segm: Any, height: int, width: int) -> np.ndarray:
    """(H, W) bool mask of a COCO segmentation: compressed/uncompressed RLE or polygons.

    Decoded by pycocotools after the structural checks (and, for a compressed string,
    after checking its runs: pycocotools would read past a short one). ValueError names
    the field and the problem.
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
