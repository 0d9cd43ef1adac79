"""Static images -> pseudo-video clips: real PNG files and COCO JSON, stored as shards and
read back as clips (`sampling.still_clip`), checked against pycocotools."""

from __future__ import annotations

import dataclasses
import json
import tempfile
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest
from coco_rle import compressed_rle, uncompressed_rle
from PIL import Image
from pycocotools import mask as mask_utils
from stored import store

from sam2_video.data import motion, sampling
from sam2_video.data.sources import coco_images
from sam2_video.params import MotionParams

H, W = 60, 80
BACKGROUND, SQUARE = (30, 60, 200), (220, 40, 40)
STILL = MotionParams(
    rotation=0.0,
    scale=(1.0, 1.0),
    shear=0.0,
    translate=0.0,
    frame_rotation=0.0,
    frame_scale=(1.0, 1.0),
    frame_shear=0.0,
    frame_translate=0.0,
    crop_area=(1.0, 1.0),
    brightness=0.0,
    contrast=0.0,
    saturation=0.0,
)
NO_JITTER = {"brightness": 0.0, "contrast": 0.0, "saturation": 0.0}


# ---------------------------------------------------------------------------- helpers


def _rect(top: int, left: int, height: int, width: int) -> np.ndarray:
    mask = np.zeros((H, W), dtype=bool)
    mask[top : top + height, left : left + width] = True
    return mask


def _disc() -> np.ndarray:
    yy, xx = np.mgrid[:H, :W]
    return (yy - 35) ** 2 + (xx - 50) ** 2 <= 64


TRIANGLE = [[10.0, 40.0, 30.0, 40.0, 20.0, 55.0]]


def _ann(ann_id: int, segmentation, image_id: int = 1, **extra) -> dict:
    return {
        "id": ann_id,
        "image_id": image_id,
        "category_id": 1,
        "segmentation": segmentation,
        **extra,
    }


def _write(tmp_path: Path, images: dict[str, np.ndarray], annotations: list[dict]) -> Path:
    """PNG files named after their keys (image ids 1, 2, ...) and the COCO JSON; its path."""
    entries = []
    for image_id, (name, rgb) in enumerate(images.items(), start=1):
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(rgb).save(tmp_path / name)
        entries.append(
            {"id": image_id, "file_name": name, "height": rgb.shape[0], "width": rgb.shape[1]}
        )
    coco = {
        "images": entries,
        "annotations": annotations,
        "categories": [{"id": 1, "name": "thing"}],
    }
    path = tmp_path / "instances.json"
    path.write_text(json.dumps(coco), encoding="utf-8")
    return path


def _noise(seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (H, W, 3), dtype=np.uint8)


def _square_image(top: int = 20, left: int = 30, side: int = 16) -> np.ndarray:
    rgb = np.empty((H, W, 3), dtype=np.uint8)
    rgb[:] = BACKGROUND
    rgb[top : top + side, left : left + side] = SQUARE
    return rgb


def _one_image(tmp_path: Path, rgb: np.ndarray, annotations: list[dict]):
    path = _write(tmp_path, {"img/0001.png": rgb}, annotations)
    (image,) = coco_images.load_coco_images(path, tmp_path)
    return image


def _clips(image, params=STILL, seed=0, length=4, max_side=10_000, max_objects=5, min_area=0):
    """The image stored (beside it) and read back as the clip `seed`'s generator draws."""
    out = Path(tempfile.mkdtemp(dir=image.path.parent)) / "shards"
    reader = store(
        [image],
        out,
        clip_length=length,
        max_side=max_side,
        max_objects=max_objects,
        min_area=min_area,
        motion=params,
    )
    if not reader.num_sources:
        return []
    return [sampling.still_clip(reader.source(0), reader.params, np.random.default_rng(seed))]


def _pycocotools_decode(seg) -> np.ndarray:
    if isinstance(seg, list):
        rle = mask_utils.merge(mask_utils.frPyObjects(seg, H, W))
    elif isinstance(seg["counts"], str):
        rle = {"size": seg["size"], "counts": seg["counts"].encode("ascii")}
    else:
        rle = mask_utils.frPyObjects(seg, H, W)
    return mask_utils.decode(rle).astype(bool)


def _nearest_reference(mask: np.ndarray, out_h: int, out_w: int) -> np.ndarray:
    """Pixel-centre nearest neighbour, one pixel at a time in exact fractions."""
    in_h, in_w = mask.shape
    out = np.zeros((out_h, out_w), dtype=bool)
    for y in range(out_h):
        for x in range(out_w):
            out[y, x] = mask[
                int(Fraction(2 * y + 1, 2 * out_h) * in_h),
                int(Fraction(2 * x + 1, 2 * out_w) * in_w),
            ]
    return out


def _shift(array: np.ndarray, dy: int, dx: int, fill) -> np.ndarray:
    """array (H, W, ...) moved by (dy, dx) pixels, uncovered pixels set to fill."""
    out = np.empty_like(array)
    out[...] = fill
    h, w = array.shape[:2]
    dst = out[max(dy, 0) : h + min(dy, 0), max(dx, 0) : w + min(dx, 0)]
    dst[...] = array[max(-dy, 0) : h - max(dy, 0), max(-dx, 0) : w - max(dx, 0)]
    return out


# ---------------------------------------------------------------------------- identity motion


@pytest.mark.parametrize("max_side", [10_000, 40])
def test_identity_motion_gives_resized_image_and_pycocotools_masks(tmp_path, max_side) -> None:
    rgb = _noise()
    segs = [compressed_rle(_disc()), TRIANGLE, uncompressed_rle(_rect(5, 5, 12, 20))]
    image = _one_image(tmp_path, rgb, [_ann(10 + k, s) for k, s in enumerate(segs)])
    (clip,) = _clips(image, max_side=max_side)
    out_h, out_w = (H, W) if max_side == 10_000 else (30, 40)
    resized = np.asarray(Image.fromarray(rgb).resize((out_w, out_h), Image.Resampling.BILINEAR))
    assert clip.name == "img_0001" and clip.object_ids == (10, 11, 12)
    assert clip.frames.shape == (4, out_h, out_w, 3)
    for t in range(4):
        np.testing.assert_array_equal(clip.frames[t], resized)
    for k, seg in enumerate(segs):
        expected = _nearest_reference(_pycocotools_decode(seg), out_h, out_w)
        for t in range(4):
            np.testing.assert_array_equal(clip.masks[t, k], expected)


def test_colour_jitter_leaves_masks_alone_and_changes_frames(tmp_path) -> None:
    image = _one_image(tmp_path, _noise(), [_ann(1, TRIANGLE)])
    (still,) = _clips(image)
    jitter = dataclasses.replace(STILL, brightness=0.3, contrast=0.3, saturation=0.3)
    (jittered,) = _clips(image, jitter)
    np.testing.assert_array_equal(jittered.masks, still.masks)
    assert all(not np.array_equal(jittered.frames[t], still.frames[t]) for t in range(4))


def test_jitter_colours_hand_computed() -> None:
    gray = np.array([[[100, 100, 100], [200, 200, 200]]], dtype=np.uint8)  # (1, 2, 3)
    np.testing.assert_array_equal(motion.jitter_colours(gray, 1.0, 1.0, 1.0), gray)
    assert motion.jitter_colours(gray, 1.2, 1.0, 1.0)[0, :, 0].tolist() == [120, 240]
    # contrast 0.5 pulls both towards their mean grey 150
    assert motion.jitter_colours(gray, 1.0, 0.5, 1.0)[0, :, 0].tolist() == [125, 175]
    red = np.array([[[200, 0, 0]]], dtype=np.uint8)
    assert motion.jitter_colours(red, 1.0, 1.0, 0.0)[0, 0].tolist() == [60, 60, 60]  # 0.299*200


# ---------------------------------------------------------------------------- geometry


def test_pure_translation_moves_mask_by_hand_computed_pixels() -> None:
    mask = np.zeros((1, 6, 8), dtype=bool)
    mask[0, 1:4, 2:4] = True  # rows 1-3, cols 2-3
    moved = motion.warp_masks(mask, motion.affine_matrix((6, 8), 0.0, 1.0, 0.0, (3.0, 1.0)))
    expected = np.zeros((6, 8), dtype=int)
    expected[2:5, 5:7] = 1  # 1 row down, 3 columns right
    np.testing.assert_array_equal(moved[0].astype(int), expected)
    off = motion.warp_masks(mask, motion.affine_matrix((6, 8), 0.0, 1.0, 0.0, (-4.0, -3.0)))
    assert off[0].astype(int).tolist() == [[0] * 8] * 6  # only rows -2..0, cols -2..-1: none
    rgb = _noise()
    warped = motion.warp_image(rgb, motion.affine_matrix((H, W), 0.0, 1.0, 0.0, (3.0, 1.0)))
    np.testing.assert_array_equal(warped[1:, 3:], rgb[:-1, :-3])
    assert warped[0, 0].tolist() == list(motion.FILL_RGB)


def test_rotation_by_90_degrees_about_the_centre() -> None:
    mask = np.zeros((1, 4, 4), dtype=bool)
    mask[0, 0, 0] = True  # top-left pixel; centre (0.5, 0.5) -> (3.5, 0.5) under +90 degrees
    turned = motion.warp_masks(mask, motion.affine_matrix((4, 4), 90.0, 1.0, 0.0, (0.0, 0.0)))
    assert np.argwhere(turned[0]).tolist() == [[0, 3]]


def test_many_objects_warp_as_each_alone_under_pil_nearest() -> None:
    """Objects travel 8 to a byte: 11 overlapping masks (two groups) each equal PIL's own
    NEAREST warp of that mask alone."""
    rng = np.random.default_rng(4)
    masks = rng.random((11, 30, 40)) < 0.4  # (O, H, W)
    matrix = motion.affine_matrix((30, 40), 23.0, 1.3, 7.0, (3.0, -2.0))
    inverse = tuple(np.linalg.inv(matrix)[:2].reshape(-1).tolist())
    warped = motion.warp_masks(masks, matrix)
    for mask, got in zip(masks, warped, strict=True):
        alone = Image.fromarray(mask.astype(np.uint8) * 255).transform(
            (40, 30), Image.Transform.AFFINE, inverse, Image.Resampling.NEAREST
        )
        np.testing.assert_array_equal(got, np.asarray(alone) > 0)


def test_jitter_colours_within_one_level_of_float_formulas() -> None:
    """torchvision's three steps in float64, unclipped between them (values stay in range)."""
    rgb = np.random.default_rng(5).integers(60, 190, (20, 30, 3), dtype=np.uint8)
    brightness, contrast, saturation = 1.1, 0.8, 1.3
    x = rgb.astype(np.float64) * brightness
    grey = x @ np.array([0.299, 0.587, 0.114])
    x = (x - grey.mean()) * contrast + grey.mean()
    grey = x @ np.array([0.299, 0.587, 0.114])
    x = (x - grey[..., None]) * saturation + grey[..., None]
    got = motion.jitter_colours(rgb, brightness, contrast, saturation).astype(np.float64)
    assert np.abs(got - np.clip(x, 0, 255)).max() <= 1.0


def test_translation_only_clip_shifts_image_and_mask_together(tmp_path) -> None:
    rgb = _noise(3)
    image = _one_image(tmp_path, rgb, [_ann(1, compressed_rle(_rect(20, 25, 15, 20)))])
    params = dataclasses.replace(STILL, translate=0.1, frame_translate=0.05)
    (clip,) = _clips(image, params, seed=5, length=5)
    shifts = set()
    for t in range(5):
        (top, left), _ = np.argwhere(clip.masks[t, 0])[[0, -1]]
        dy, dx = int(top) - 20, int(left) - 25
        shifts.add((dy, dx))
        assert abs(dx) <= 0.15 * W + 1 and abs(dy) <= 0.15 * H + 1
        np.testing.assert_array_equal(clip.masks[t, 0], _shift(_rect(20, 25, 15, 20), dy, dx, 0))
        np.testing.assert_array_equal(clip.frames[t], _shift(rgb, dy, dx, motion.FILL_RGB))
    assert len(shifts) > 1  # the frames really move


@pytest.mark.parametrize("seed", range(6))
def test_image_and_mask_stay_aligned_under_random_motion(tmp_path, seed) -> None:
    square = np.zeros((H, W), dtype=bool)
    square[20:36, 30:46] = True
    image = _one_image(tmp_path, _square_image(), [_ann(1, compressed_rle(square))])
    params = MotionParams(crop_area=(0.5, 1.0), **NO_JITTER)
    (clip,) = _clips(image, params, seed=seed, length=6)
    for t in range(6):
        mask = clip.masks[t, 0]
        colours = clip.frames[t].astype(int)
        inside = _erode(mask)
        outside = _erode(~mask)
        assert inside.sum() > 0 or t > 0
        assert np.abs(colours[inside] - SQUARE).max(initial=0) <= 2
        assert (np.abs(colours[outside] - SQUARE).max(axis=-1) > 60).all()
    assert clip.masks[0, 0].sum() > 50


def _erode(mask: np.ndarray) -> np.ndarray:
    """Pixels whose 3x3 neighbourhood is all inside `mask` (away from bilinear blending)."""
    padded = np.pad(mask, 1, constant_values=False)
    shifted = [
        padded[1 + dy : 1 + dy + mask.shape[0], 1 + dx : 1 + dx + mask.shape[1]]
        for dy in (-1, 0, 1)
        for dx in (-1, 0, 1)
    ]
    return np.logical_and.reduce(shifted)


def test_object_pushed_outside_has_empty_mask_not_an_error(tmp_path) -> None:
    image = _one_image(
        tmp_path, _square_image(20, 2, 10), [_ann(1, compressed_rle(_rect(20, 2, 10, 10)))]
    )
    params = dataclasses.replace(STILL, frame_translate=0.3)
    found = False
    for seed in range(10):
        for clip in _clips(image, params, seed=seed, length=6):
            present = clip.masks[:, 0].any(axis=(1, 2))
            assert present[0]
            found |= not present.all()
    assert found


def test_motion_is_drawn_again_until_an_object_shows_on_the_first_frame(tmp_path) -> None:
    image = _one_image(
        tmp_path, _square_image(20, 0, 8), [_ann(1, compressed_rle(_rect(20, 0, 8, 8)))]
    )
    params = dataclasses.replace(STILL, translate=0.5)
    rgb = np.asarray(Image.open(image.path).convert("RGB"))
    masks = _rect(20, 0, 8, 8)[None]  # (1, H, W)
    draws = [
        motion.pseudo_video_clip("a", rgb, masks, (1,), 2, 5, params, np.random.default_rng(s))
        for s in range(12)
    ]
    assert None in draws and any(d is not None for d in draws)  # some draws lose the object
    for seed in range(12):  # the sampler draws again: every clip shows it on frame 0
        (clip,) = _clips(image, params, seed=seed, length=2)
        assert clip.masks[0, 0].any()


# ---------------------------------------------------------------------------- determinism, objects


def test_same_seed_gives_identical_clip_and_another_seed_differs(tmp_path) -> None:
    image = _one_image(tmp_path, _noise(), [_ann(1, TRIANGLE), _ann(2, compressed_rle(_disc()))])
    params = MotionParams(crop_area=(0.6, 1.0))
    (a,), (b,), (c,) = (_clips(image, params, seed=s) for s in (7, 7, 8))
    np.testing.assert_array_equal(a.frames, b.frames)
    np.testing.assert_array_equal(a.masks, b.masks)
    assert not np.array_equal(a.frames, c.frames)


def test_max_objects_and_min_area(tmp_path) -> None:
    segs = [compressed_rle(_rect(5 + 12 * k, 5, 10, 10)) for k in range(4)]
    segs.append(compressed_rle(_rect(50, 70, 2, 2)))  # area 4
    image = _one_image(tmp_path, _noise(), [_ann(k + 1, s) for k, s in enumerate(segs)])
    (clip,) = _clips(image, max_objects=2)
    assert len(clip.object_ids) == 2 and set(clip.object_ids) <= {1, 2, 3, 4, 5}
    (big,) = _clips(image, length=2, max_objects=9, min_area=5)
    assert big.object_ids == (1, 2, 3, 4)


def test_crowd_annotations_excluded_unless_asked(tmp_path) -> None:
    crowd = _ann(2, uncompressed_rle(_rect(0, 0, 10, 10)), iscrowd=1)
    path = _write(tmp_path, {"a.png": _noise(), "b.png": _noise(1)}, [_ann(1, TRIANGLE), crowd])
    default = coco_images.load_coco_images(path, tmp_path)
    assert [i.name for i in default] == ["a", "b"]
    assert [oid for oid, _ in default[0].objects] == [1]
    with_crowd = coco_images.load_coco_images(path, tmp_path, include_crowd=True)
    assert [oid for oid, _ in with_crowd[0].objects] == [1, 2]
    reader = store(default, tmp_path / "shards")
    assert reader.names == ["a"] and reader.manifest["skips"] == {"no_object_on_first_frame": 1}


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda c: c["annotations"][0].pop("id"), "annotations[0].id: error: missing"),
        (lambda c: c["annotations"][0].update(image_id=99), "image_id: error: 99"),
        (lambda c: c["images"][1].update(file_name="a.jpg"), "image id=2: file_name"),
        (lambda c: c["images"][0].pop("height"), "images[id=1].height: error: missing"),
        (lambda c: c.pop("categories"), "categories: error: not a COCO JSON"),
    ],
)
def test_malformed_json_names_file_and_field(tmp_path, edit, message) -> None:
    path = _write(tmp_path, {"a.png": _noise(), "b.png": _noise(1)}, [_ann(1, TRIANGLE)])
    coco = json.loads(path.read_text())
    edit(coco)
    path.write_text(json.dumps(coco))
    with pytest.raises(ValueError, match=r"instances\.json") as err:
        coco_images.load_coco_images(path, tmp_path)
    assert message in str(err.value)


def test_parallel_shard_build_matches_serial(tmp_path) -> None:
    images = {f"im{k}.png": _noise(k) for k in range(3)}
    anns = [_ann(10 + k, TRIANGLE, image_id=k + 1) for k in range(3)]
    raw = tmp_path / "raw"
    sources = coco_images.load_coco_images(_write(raw, images, anns), raw)
    built = {}
    for workers in (1, 2):
        out = tmp_path / f"w{workers}"
        store(sources, out, workers=workers, sources_per_shard=2, clip_length=3, max_side=32)
        built[workers] = {p.name: p.read_bytes() for p in sorted(out.iterdir())}
    assert built[1] == built[2] and len(built[1]) == 3  # two shards and the manifest
    reader = store(sources, tmp_path / "again", clip_length=3, max_side=32)
    assert reader.names == ["im0", "im1", "im2"] and reader[0].frames.shape == (3, 24, 32, 3)
