"""COCO segmentations as run lengths (rle.py), checked against pycocotools and by hand."""

from __future__ import annotations

import re

import numpy as np
import pytest
from coco_rle import H, W, blob, compressed_rle, nearest_reference, rect, triangle, uncompressed_rle
from pycocotools import mask as mask_utils

from sam2_video.data import rle

# ---------------------------------------------------------------------------- decoding


def test_decode_compressed_rle_matches_pycocotools() -> None:
    mask = blob(3)
    segm = compressed_rle(mask)
    decoded = rle.decode_segmentation(segm, H, W)
    assert decoded.dtype == np.bool_ and decoded.shape == (H, W)
    np.testing.assert_array_equal(decoded, mask_utils.decode(segm).astype(bool))
    np.testing.assert_array_equal(decoded, mask)


def test_decode_uncompressed_rle_matches_pycocotools() -> None:
    mask = blob(1) | rect(0, 0, 3, 3)  # starts with a run of ones
    segm = uncompressed_rle(mask)
    assert segm["counts"][0] == 0
    decoded = rle.decode_segmentation(segm, H, W)
    np.testing.assert_array_equal(decoded, mask)
    expected = mask_utils.decode(mask_utils.frPyObjects(segm, H, W)).astype(bool)
    np.testing.assert_array_equal(decoded, expected)


def test_decode_polygons_are_merged_like_pycocotools() -> None:
    polygons = [[1.0, 1.0, 4.0, 1.0, 4.0, 3.0, 1.0, 3.0], *triangle(0)]
    decoded = rle.decode_segmentation(polygons, H, W)
    expected = mask_utils.decode(mask_utils.merge(mask_utils.frPyObjects(polygons, H, W)))
    np.testing.assert_array_equal(decoded, expected.astype(bool))
    # hand-checked: pycocotools fills the 3x2 rectangle rows 1-2, columns 1-3
    np.testing.assert_array_equal(
        np.argwhere(decoded[:5, :8]), [[1, 1], [1, 2], [1, 3], [2, 1], [2, 2], [2, 3]]
    )


@pytest.mark.parametrize(
    ("segm", "message"),
    [
        ({"size": [H + 1, W], "counts": "PP0"}, "RLE size"),
        ({"size": [H, W], "counts": [5, 10]}, "sum to 15"),
        ({"size": [H, W], "counts": [True, H * W - 1]}, "must be non-negative integers"),
        ({"size": [H, W], "counts": [-1, H * W + 1]}, "must be non-negative integers"),
        ([[1.0, 1.0, 5.0, "5", 9.0, 1.0]], "polygon 0 is not a flat list of numbers"),
        ([[1.0, 1.0, 5.0, 5.0]], "polygon 0 has 4 coordinates"),
        ([], "empty polygon list"),
        ("abc", "expected an RLE dict"),
    ],
)
def test_decode_rejects_bad_segmentations(segm: object, message: str) -> None:
    with pytest.raises(ValueError, match=re.escape(message)) as err:
        rle.decode_segmentation(segm, H, W)
    assert "'segmentation'" in str(err.value)


def test_decode_rejects_compressed_rle_that_falls_short() -> None:
    short = compressed_rle(rect(0, 0, 2, 2))
    short["counts"] = mask_utils.encode(np.asfortranarray(np.ones((2, 2), np.uint8)))["counts"]
    with pytest.raises(ValueError, match="runs sum to 4"):
        rle.decode_segmentation(short, H, W)


# ---------------------------------------------------------------------------- RLE runs


def _varied_masks(rng: np.random.Generator, height: int, width: int) -> list[np.ndarray]:
    """Empty, full, a box touching pixel (0, 0), sparse noise and dense noise."""
    box = np.zeros((height, width), dtype=bool)
    box[: height // 2 + 1, : width // 3 + 1] = True
    noise = [rng.random((height, width)) < p for p in (0.05, 0.7)]
    return [np.zeros((height, width), bool), np.ones((height, width), bool), box, *noise]


def test_bulk_runs_decode_like_pycocotools() -> None:
    rng = np.random.default_rng(3)
    segms, sizes, masks = [], [], []
    for height, width in [(40, 60), (1, 1), (7, 300), (123, 5)]:
        for k, mask in enumerate(_varied_masks(rng, height, width)):
            segms.append(compressed_rle(mask) if k % 2 else uncompressed_rle(mask))
            sizes.append((height, width))
            masks.append(mask)
    polygons = [[1.0, 1.0, 14.0, 2.0, 9.0, 30.0], [30.5, 3.0, 50.0, 3.0, 41.0, 20.0]]
    segms.append(polygons)
    sizes.append((H, W))
    masks.append(mask_utils.decode(mask_utils.merge(mask_utils.frPyObjects(polygons, H, W))))
    found = rle.bulk_segmentation_runs(segms, sizes)
    for runs, size, mask in zip(found, sizes, masks, strict=True):
        assert runs is not None
        np.testing.assert_array_equal(rle.resize_runs([runs], size, size)[0], mask)
        assert rle.runs_area(runs) == int(mask.sum())


def test_bad_rle_strings_are_left_to_the_exact_check() -> None:
    good = compressed_rle(blob(0))
    short = compressed_rle(rect(0, 0, 2, 2)[:2, :2]) | {"size": [H, W]}
    cut = good | {"counts": good["counts"] + "Q"}  # ends inside a run length
    foreign = good | {"counts": "é" + good["counts"]}
    segms = [good, short, good, cut, foreign, good | {"counts": ""}]
    found = rle.bulk_segmentation_runs(segms, [(H, W)] * len(segms))
    assert [runs is None for runs in found] == [False, True, False, True, True, True]
    for segm, message in [(short, "runs sum to 4"), (cut, "middle of a run length"),
                          (foreign, "'ascii' codec"), (segms[-1], "runs sum to 0")]:  # fmt: skip
        with pytest.raises(ValueError, match=re.escape(message)):
            rle.segmentation_runs(segm, H, W)


def test_unusual_but_valid_rle_still_decodes() -> None:
    mask = blob(2) | rect(0, 0, 3, 3)  # starts with a run of ones: the first count is 0
    segm = compressed_rle(mask)
    assert segm["counts"].startswith("0")
    padded = segm | {"counts": "PPPPPPP" + segm["counts"]}  # 0 written with 8 characters
    (runs,) = rle.bulk_segmentation_runs([padded], [(H, W)])
    assert runs is None  # beyond the fast path: parsed exactly instead
    expected = mask_utils.decode({"size": [H, W], "counts": padded["counts"].encode()})
    np.testing.assert_array_equal(rle.decode_segmentation(padded, H, W), expected)
    np.testing.assert_array_equal(rle.decode_segmentation(padded, H, W), mask)


def test_resize_runs_samples_pixel_centres() -> None:
    rng = np.random.default_rng(4)
    for in_h, in_w, out_h, out_w in [(40, 60, 20, 30), (37, 53, 20, 29), (8, 52, 22, 107)]:
        masks = _varied_masks(rng, in_h, in_w)
        runs = [rle.segmentation_runs(uncompressed_rle(m), in_h, in_w) for m in masks]
        resized = rle.resize_runs(runs, (in_h, in_w), (out_h, out_w))
        assert resized.shape == (len(masks), out_h, out_w) and resized.dtype == np.bool_
        for mask, out in zip(masks, resized, strict=True):
            np.testing.assert_array_equal(out, nearest_reference(mask, out_h, out_w))
    assert rle.resize_runs([], (4, 5), (2, 3)).shape == (0, 2, 3)


@pytest.mark.parametrize("fill", [0.003, 0.5])
def test_resize_runs_fills_sparse_and_dense_masks_alike(fill: float) -> None:
    """Few True samples are set one by one, many are expanded and transposed: same pixels."""
    rng = np.random.default_rng(6)
    for in_h, in_w, out_h, out_w in [(40, 60, 20, 30), (37, 53, 41, 29), (8, 52, 22, 107)]:
        masks = [rng.random((in_h, in_w)) < fill for _ in range(6)]
        runs = [rle.segmentation_runs(uncompressed_rle(m), in_h, in_w) for m in masks]
        resized = rle.resize_runs(runs, (in_h, in_w), (out_h, out_w))
        sparse = resized.mean() * rle._SPARSE_SHARE < 1  # the path this fill takes
        assert sparse == (fill < 0.1) and resized.flags.c_contiguous
        for mask, out in zip(masks, resized, strict=True):
            np.testing.assert_array_equal(out, nearest_reference(mask, out_h, out_w))


def test_bulk_runs_are_the_run_lengths_of_the_mask() -> None:
    """Strings of 1, 2, 3 and many runs (the delta coding starts at the 4th) parsed together."""
    rng = np.random.default_rng(7)
    masks = [np.zeros((H, W), bool), np.ones((H, W), bool), rect(0, 0, 3, 1), rect(5, 0, 2, 2)]
    masks += [rng.random((H, W)) < p for p in (0.01, 0.3, 0.9)]
    found = rle.bulk_segmentation_runs([compressed_rle(m) for m in masks], [(H, W)] * len(masks))
    for runs, mask in zip(found, masks, strict=True):
        assert runs is not None
        assert runs.tolist() == uncompressed_rle(mask)["counts"]


def test_single_polygons_decode_as_pycocotools_merges_them() -> None:
    """One polygon is rasterised without pycocotools' merge (a copy): the same mask."""
    segms = [triangle(0), triangle(3) + triangle(20), [[1.0, 1.0, 30.0, 2.0, 9.0, 35.0, 2.0, 20.0]]]
    found = rle.bulk_segmentation_runs(segms, [(H, W)] * len(segms))
    for runs, segm in zip(found, segms, strict=True):
        expected = mask_utils.decode(mask_utils.merge(mask_utils.frPyObjects(segm, H, W)))
        assert runs is not None
        np.testing.assert_array_equal(rle.resize_runs([runs], (H, W), (H, W))[0], expected)
        np.testing.assert_array_equal(rle.decode_segmentation(segm, H, W), expected)


def test_union_area_matches_pycocotools_merge() -> None:
    rng = np.random.default_rng(5)
    for trial in range(12):
        masks = [rng.random((H, W)) < rng.random() ** 3 for _ in range(1 + trial % 4)]
        rles = [mask_utils.encode(np.asfortranarray(m.astype(np.uint8))) for m in masks]
        runs = [rle.segmentation_runs(uncompressed_rle(m), H, W) for m in masks]
        expected = int(mask_utils.area(mask_utils.merge(rles)))
        assert rle.union_area(runs) == expected == int(np.logical_or.reduce(masks).sum())


# ---------------------------------------------------------------------------- resizing


def test_resize_mask_picks_pixel_centres() -> None:
    mask = np.arange(16).reshape(4, 4) % 3 == 0
    np.testing.assert_array_equal(rle.resize_mask(mask, (2, 2)), mask[[1, 3]][:, [1, 3]])
    rng = np.random.default_rng(1)
    for in_h, in_w, out_h, out_w in [(8, 52, 22, 207), (56, 150, 17, 79), (37, 53, 20, 29)]:
        random_mask = rng.random((in_h, in_w)) > 0.5
        np.testing.assert_array_equal(
            rle.resize_mask(random_mask, (out_h, out_w)),
            nearest_reference(random_mask, out_h, out_w),
        )
