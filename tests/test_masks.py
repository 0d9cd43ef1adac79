"""COCO segmentations (sources/masks.py): checked, decoded, resized; against pycocotools."""

from __future__ import annotations

import re

import numpy as np
import pytest
from coco_rle import H, W, blob, compressed_rle, nearest_reference, rect, triangle, uncompressed_rle
from pycocotools import mask as mask_utils

from sam2_video.data.sources import masks

# ---------------------------------------------------------------------------- decoding


def test_decode_compressed_rle_matches_pycocotools() -> None:
    mask = blob(3)
    segm = compressed_rle(mask)
    decoded = masks.decode_segmentation(segm, H, W)
    assert decoded.dtype == np.bool_ and decoded.shape == (H, W)
    np.testing.assert_array_equal(decoded, mask_utils.decode(segm).astype(bool))
    np.testing.assert_array_equal(decoded, mask)


def test_decode_uncompressed_rle_matches_pycocotools() -> None:
    mask = blob(1) | rect(0, 0, 3, 3)  # starts with a run of ones
    segm = uncompressed_rle(mask)
    assert segm["counts"][0] == 0
    decoded = masks.decode_segmentation(segm, H, W)
    np.testing.assert_array_equal(decoded, mask)
    expected = mask_utils.decode(mask_utils.frPyObjects(segm, H, W)).astype(bool)
    np.testing.assert_array_equal(decoded, expected)


def test_decode_polygons_are_merged_like_pycocotools() -> None:
    polygons = [[1.0, 1.0, 4.0, 1.0, 4.0, 3.0, 1.0, 3.0], *triangle(0)]
    decoded = masks.decode_segmentation(polygons, H, W)
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
        masks.decode_segmentation(segm, H, W)
    assert "'segmentation'" in str(err.value)


def test_decode_rejects_compressed_rle_that_falls_short() -> None:
    short = compressed_rle(rect(0, 0, 2, 2))
    short["counts"] = mask_utils.encode(np.asfortranarray(np.ones((2, 2), np.uint8)))["counts"]
    with pytest.raises(ValueError, match="runs sum to 4"):
        masks.decode_segmentation(short, H, W)


def test_corrupt_compressed_strings_name_the_problem() -> None:
    good = compressed_rle(blob(0))
    cut = good | {"counts": good["counts"] + "Q"}  # ends inside a run length
    foreign = good | {"counts": "é" + good["counts"]}
    for segm, message in [
        (cut, "middle of a run length"),
        (foreign, "'ascii' codec"),
        (good | {"counts": ""}, "runs sum to 0"),
    ]:
        with pytest.raises(ValueError, match=re.escape(message)):
            masks.decode_segmentation(segm, H, W)


def test_unusual_but_valid_rle_still_decodes() -> None:
    mask = blob(2) | rect(0, 0, 3, 3)  # starts with a run of ones: the first count is 0
    segm = compressed_rle(mask)
    assert segm["counts"].startswith("0")
    padded = segm | {"counts": "PPPPPPP" + segm["counts"]}  # 0 written with 8 characters
    expected = mask_utils.decode({"size": [H, W], "counts": padded["counts"].encode()})
    np.testing.assert_array_equal(masks.decode_segmentation(padded, H, W), expected)
    np.testing.assert_array_equal(masks.decode_segmentation(padded, H, W), mask)


# ---------------------------------------------------------------------------- resizing


def test_resize_mask_picks_pixel_centres() -> None:
    mask = np.arange(16).reshape(4, 4) % 3 == 0
    np.testing.assert_array_equal(masks.resize_mask(mask, (2, 2)), mask[[1, 3]][:, [1, 3]])
    rng = np.random.default_rng(1)
    for in_h, in_w, out_h, out_w in [(8, 52, 22, 207), (56, 150, 17, 79), (37, 53, 20, 29)]:
        random_mask = rng.random((in_h, in_w)) > 0.5
        np.testing.assert_array_equal(
            masks.resize_mask(random_mask, (out_h, out_w)),
            nearest_reference(random_mask, out_h, out_w),
        )
