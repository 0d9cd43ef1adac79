"""COCO RLE encodings written independently of the library, for building test datasets."""

from __future__ import annotations

from fractions import Fraction

import numpy as np
from pycocotools import mask as mask_utils


def compressed_rle(mask: np.ndarray) -> dict:
    rle = mask_utils.encode(np.asfortranarray(mask.astype(np.uint8)))
    return {"size": list(rle["size"]), "counts": rle["counts"].decode("ascii")}


def uncompressed_rle(mask: np.ndarray) -> dict:
    """COCO's uncompressed RLE: column-major run lengths, starting with a run of zeros."""
    flat = mask.flatten(order="F").astype(np.int8)
    bounds = np.concatenate([[0], np.flatnonzero(np.diff(flat)) + 1, [flat.size]])
    counts = np.diff(bounds).tolist()
    return {"size": list(mask.shape), "counts": [0, *counts] if flat[0] else counts}


# Shapes on an H x W = 40 x 60 frame, shared by the COCO reader's and the RLE tests.
H, W = 40, 60


def rect(top: int, left: int, height: int, width: int) -> np.ndarray:
    mask = np.zeros((H, W), dtype=bool)
    mask[top : top + height, left : left + width] = True
    return mask


def blob(t: int) -> np.ndarray:
    """An irregular mask that moves: a disc with a notch, shifted by t."""
    yy, xx = np.mgrid[:H, :W]
    disc = (yy - 25) ** 2 + (xx - 40 - t) ** 2 <= 36
    return disc & ~((yy > 25) & (xx > 40 + t))


def triangle(t: int) -> list[list[float]]:
    """A polygon segmentation (one triangle), shifted by t."""
    return [[5.0 + t, 30.0, 20.0 + t, 30.0, 12.5 + t, 38.0]]


def nearest_reference(mask: np.ndarray, out_h: int, out_w: int) -> np.ndarray:
    """Pixel-centre nearest neighbour, one pixel at a time in exact fractions."""
    in_h, in_w = mask.shape
    out = np.zeros((out_h, out_w), dtype=bool)
    for y in range(out_h):
        for x in range(out_w):
            src_y = int(Fraction(2 * y + 1, 2 * out_h) * in_h)
            src_x = int(Fraction(2 * x + 1, 2 * out_w) * in_w)
            out[y, x] = mask[src_y, src_x]
    return out
