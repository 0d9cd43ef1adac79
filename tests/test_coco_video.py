"""COCO video sources: real PNG frames and COCO JSON on disk, checked against pycocotools."""

from __future__ import annotations

import copy
import json
import re
from pathlib import Path

import numpy as np
import pytest
from coco_rle import H, W, blob, compressed_rle, nearest_reference, rect, triangle, uncompressed_rle
from PIL import Image
from pycocotools import mask as mask_utils
from stored import store

from sam2_video.data.sources import coco_video

NUM_FRAMES = 4


# ---------------------------------------------------------------------------- helpers


def _write_frames(image_dir: Path, names: list[str]) -> None:
    rng = np.random.default_rng(0)
    for name in names:
        path = image_dir / name
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(rng.integers(0, 256, (H, W, 3), dtype=np.uint8)).save(path)


def _dataset() -> dict:
    """One video of 4 frames, listed out of order; tracks 7/8/9 (RLE/RLE/polygon), 10 late."""
    images = [
        {
            "id": 100 + t,
            "file_name": f"v1/{t:03d}.png",
            "height": H,
            "width": W,
            "video_id": 1,
            "order_in_video": t,
        }
        for t in reversed(range(NUM_FRAMES))
    ]
    annotations = []
    for t in range(NUM_FRAMES):
        annotations.append((7, 1, compressed_rle(rect(5, 10 + 2 * t, 10, 15)), t))
        annotations.append((8, 1, uncompressed_rle(blob(t)), t))
        if t != 2:  # track 9 is occluded on frame 2
            annotations.append((9, 2, triangle(t), t))
        if t >= 1:  # track 10 enters on frame 1
            annotations.append((10, 2, compressed_rle(rect(30, 2, 6, 6)), t))
    anns = [
        {
            "id": k + 1,
            "image_id": 100 + t,
            "category_id": cat,
            "segmentation": segm,
            "track_id": track,
            "iscrowd": 0,
        }
        for k, (track, cat, segm, t) in enumerate(annotations)
    ]
    categories = [{"id": 1, "name": "thing"}, {"id": 2, "name": "other"}]
    return {"images": images, "annotations": anns, "categories": categories}


def _write_dataset(root: Path, data: dict) -> tuple[Path, Path]:
    image_dir = root / "images"
    _write_frames(image_dir, sorted({image["file_name"] for image in data["images"]}))
    ann_path = root / "annotations.json"
    ann_path.write_text(json.dumps(data, ensure_ascii=False), encoding="utf-8")
    return ann_path, image_dir


def _clips(video: coco_video.CocoVideo, out: Path, **overrides) -> list:
    """The fixed clips of the stored video (every window: stride 1, all objects)."""
    params = {"clip_length": 3, "stride": 1, "max_objects": 10, "min_area": 1, "max_side": 30}
    reader = store([video], out, **(params | overrides))
    return [reader[i] for i in range(len(reader))]


def _reference_mask(data: dict, object_id: int, t: int, key: str = "track_id") -> np.ndarray:
    """Union of the object's annotations on frame t, decoded by pycocotools directly."""
    mask = np.zeros((H, W), dtype=bool)
    for ann in data["annotations"]:
        if ann["image_id"] == 100 + t and ann[key] == object_id:
            segm = ann["segmentation"]
            if isinstance(segm, list):
                rle = mask_utils.merge(mask_utils.frPyObjects(segm, H, W))
            elif isinstance(segm["counts"], list):
                rle = mask_utils.frPyObjects(segm, H, W)
            else:
                rle = segm
            mask |= mask_utils.decode(rle).astype(bool)
    return mask


# ---------------------------------------------------------------------------- videos, clips


def test_frame_masks_are_the_union_pycocotools_decodes(tmp_path: Path) -> None:
    data = _dataset()
    (video,) = coco_video.load_coco_videos(*_write_dataset(tmp_path, data))
    for t in range(NUM_FRAMES):
        masks = video.frame_masks(t)
        assert sorted(masks) == [7, 8, 10] if t == 2 else [7, 8, 9, 10] if t else [7, 8, 9]
        for object_id, mask in masks.items():
            np.testing.assert_array_equal(mask, _reference_mask(data, object_id, t))


def test_stored_clips_match_independently_decoded_and_resized_masks(tmp_path: Path) -> None:
    data = _dataset()
    ann_path, image_dir = _write_dataset(tmp_path, data)
    (video,) = coco_video.load_coco_videos(ann_path, image_dir)
    assert video.name == "1" and video.num_frames == NUM_FRAMES
    clips = _clips(video, tmp_path / "shards")
    assert [c.name for c in clips] == ["1__00000", "1__00001"]
    assert clips[0].object_ids == (7, 8, 9)  # track 10 is not on frame 0
    assert clips[1].object_ids == (7, 8, 9, 10)
    for clip, start in zip(clips, (0, 1), strict=True):
        assert clip.frames.shape == (3, 20, 30, 3) and clip.frames.dtype == np.uint8
        for t in range(3):
            source = image_dir / f"v1/{start + t:03d}.png"
            expected_rgb = Image.open(source).convert("RGB").resize((30, 20), Image.BILINEAR)
            np.testing.assert_array_equal(clip.frames[t], np.asarray(expected_rgb))
            for k, object_id in enumerate(clip.object_ids):
                expected = nearest_reference(_reference_mask(data, object_id, start + t), 20, 30)
                np.testing.assert_array_equal(clip.masks[t, k], expected)
    assert not clips[0].masks[2, 2].any()  # track 9 occluded on frame 2: empty mask


@pytest.mark.parametrize("odd_frame", [1, 3])
def test_frames_of_another_size_are_reported(tmp_path: Path, odd_frame: int) -> None:
    data = _dataset()
    data["annotations"] = [a for a in data["annotations"] if a["image_id"] != 100 + odd_frame]
    odd = next(image for image in data["images"] if image["id"] == 100 + odd_frame)
    odd["height"] = H + 4
    ann_path, image_dir = _write_dataset(tmp_path, data)
    Image.new("RGB", (W, H + 4)).save(image_dir / odd["file_name"])
    (video,) = coco_video.load_coco_videos(ann_path, image_dir)
    with pytest.raises(ValueError, match="frames of a video must share one size"):
        _clips(video, tmp_path / "shards", min_area=0)
    assert not (tmp_path / "shards").exists()  # nothing half-written


def test_frames_sorted_by_order_field(tmp_path: Path) -> None:
    for key in ("order_in_video", "frame_id", "frame_index"):
        data = _dataset()
        for image in data["images"]:
            image[key] = 10 * (NUM_FRAMES - image.pop("order_in_video"))  # reverse the order
        ann_path, image_dir = _write_dataset(tmp_path / key, data)
        (video,) = coco_video.load_coco_videos(ann_path, image_dir)
        assert video.frame_image_ids == (103, 102, 101, 100), key
        assert [p.name for p in video.frame_paths] == ["003.png", "002.png", "001.png", "000.png"]


def test_objects_are_categories_without_track_ids(tmp_path: Path) -> None:
    data = _dataset()
    for ann in data["annotations"]:
        ann["track"] = ann.pop("track_id")  # not a track field: categories become objects
    ann_path, image_dir = _write_dataset(tmp_path, data)
    (video,) = coco_video.load_coco_videos(ann_path, image_dir)
    clip = _clips(video, tmp_path / "shards")[0]
    assert clip.object_ids == (1, 2)
    for t in range(3):
        union = _reference_mask(data, 7, t, "track") | _reference_mask(data, 8, t, "track")
        np.testing.assert_array_equal(clip.masks[t, 0], nearest_reference(union, 20, 30))


@pytest.mark.parametrize("where", ["instance_id", "attributes"])
def test_other_track_id_fields(tmp_path: Path, where: str) -> None:
    data = _dataset()
    for ann in data["annotations"]:
        track = ann.pop("track_id")
        if where == "attributes":
            ann["attributes"] = {"track_id": track, "occluded": False}
        else:
            ann["instance_id"] = track
    ann_path, image_dir = _write_dataset(tmp_path, data)
    (video,) = coco_video.load_coco_videos(ann_path, image_dir)
    assert _clips(video, tmp_path / "shards")[1].object_ids == (7, 8, 9, 10)


def test_min_area_uses_source_resolution(tmp_path: Path) -> None:
    data = _dataset()
    ann_path, image_dir = _write_dataset(tmp_path, data)
    (video,) = coco_video.load_coco_videos(ann_path, image_dir)
    triangle_area = int(_reference_mask(data, 9, 0).sum())
    assert _clips(video, tmp_path / "a", min_area=triangle_area)[0].object_ids == (7, 8, 9)
    assert _clips(video, tmp_path / "b", min_area=triangle_area + 1)[0].object_ids == (7, 8)


def test_skipped_videos_are_counted_and_windows_start_on_objects(tmp_path: Path) -> None:
    data = _dataset()
    data["annotations"] = [
        a for a in data["annotations"] if a["track_id"] == 10 and a["image_id"] >= 102
    ]  # only frames 2 and 3 have an object
    data["images"].append(
        {
            "id": 500,
            "file_name": "v2/000.png",
            "height": H,
            "width": W,
            "video_id": "v2",
            "order_in_video": 0,
        }
    )
    ann_path, image_dir = _write_dataset(tmp_path, data)
    long_video, short_video = coco_video.load_coco_videos(ann_path, image_dir)
    reader = store([long_video, short_video], tmp_path / "a", clip_length=2, stride=1)
    assert reader.names == ["1__00002"] and reader.num_sources == 1
    assert reader.manifest["skips"] == {"video_shorter_than_clip": 1}
    reader = store([long_video], tmp_path / "b", clip_length=3, stride=1)  # a start <= 1 needed
    assert reader.num_sources == 0
    assert reader.manifest["skips"] == {"no_object_on_first_frame": 1}


def test_non_ascii_names(tmp_path: Path) -> None:
    data = _dataset()
    for image in data["images"]:
        image["file_name"] = image["file_name"].replace("v1/", "видео/кадр_ü_")
        image["video_id"] = "vidéo 1/ü"
    ann_path, image_dir = _write_dataset(tmp_path, data)
    (video,) = coco_video.load_coco_videos(ann_path, image_dir)
    assert re.fullmatch(r"[A-Za-z0-9._-]+", video.name)
    assert video.frame_paths[0] == image_dir / "видео" / "кадр_ü_000.png"
    assert _clips(video, tmp_path / "shards")[0].frames.shape == (3, 20, 30, 3)


# ---------------------------------------------------------------------------- image files


def _first_ann(data: dict) -> dict:
    return data["annotations"][0]


BAD_JSON_CASES = {
    "rle size": (
        lambda d: _first_ann(d)["segmentation"].update(size=[H + 1, W]),
        "annotations[id=1].segmentation: error: RLE size [41, 60] disagrees",
    ),
    "polygon points": (
        lambda d: _first_ann(d).update(segmentation=[[1, 2, 3, 4]]),
        "annotations[id=1].segmentation: error: polygon 0 has 4 coordinates",
    ),
    "rle sum": (
        lambda d: d["annotations"][1]["segmentation"].update(counts=[1, 2]),
        "annotations[id=2].segmentation: error: RLE counts sum to 3",
    ),
    "unknown image": (
        lambda d: _first_ann(d).update(image_id=999),
        "annotations[id=1].image_id: error: 999 is not an image id",
    ),
    "unknown category": (
        lambda d: _first_ann(d).update(category_id=5),
        "annotations[id=1].category_id: error: 5 is not a category id",
    ),
    "duplicate image": (
        lambda d: d["images"].append(copy.deepcopy(d["images"][0])),
        "images[id=103].id: error: duplicate image id",
    ),
    "duplicate order": (
        lambda d: d["images"][0].update(order_in_video=0),
        "order_in_video: error: frame order 0 appears twice in video 1",
    ),
    "no order": (
        lambda d: d["images"][0].pop("order_in_video"),
        "images[id=103].order_in_video: error: no frame order",
    ),
    "no video id": (
        lambda d: d["images"][0].pop("video_id"),
        "images[id=103].video_id: error: missing",
    ),
    "no images": (lambda d: d.pop("images"), "images: error: not a COCO JSON"),
    "no annotations": (lambda d: d.pop("annotations"), "annotations: error: not a COCO JSON"),
    "escaping file name": (
        lambda d: d["images"][0].update(file_name="../x.png"),
        "images[id=103].file_name: error: '../x.png' must be a path relative",
    ),
    "mixed tracks": (
        lambda d: _first_ann(d).pop("track_id"),
        "annotations[id=1].track_id: error: missing, while other annotations",
    ),
    "duplicate annotation id": (
        lambda d: d["annotations"][1].update(id=1),
        "annotations[id=1].id: error: duplicate annotation id",
    ),
}


@pytest.mark.parametrize("case", sorted(BAD_JSON_CASES))
def test_bad_json_names_file_and_field(tmp_path: Path, case: str) -> None:
    mutate, message = BAD_JSON_CASES[case]
    data = _dataset()
    mutate(data)
    ann_path = tmp_path / "bad.json"
    ann_path.write_text(json.dumps(data), encoding="utf-8")
    with pytest.raises(ValueError) as err:
        coco_video.load_coco_videos(ann_path, tmp_path)
    assert str(err.value).startswith(f"{ann_path}:")
    assert message in str(err.value)


def test_corrupt_compressed_rle_is_reported_when_loaded(tmp_path: Path) -> None:
    data = _dataset()
    _first_ann(data)["segmentation"]["counts"] = compressed_rle(rect(0, 0, 4, 4)[:8, :8])["counts"]
    ann_path, image_dir = _write_dataset(tmp_path, data)
    with pytest.raises(
        ValueError, match=re.escape(f"{ann_path}:annotations[id=1].segmentation: error: ")
    ):
        coco_video.load_coco_videos(ann_path, image_dir)


@pytest.mark.parametrize("problem", ["missing", "truncated", "wrong size"])
def test_bad_image_file_names_the_file(tmp_path: Path, problem: str) -> None:
    ann_path, image_dir = _write_dataset(tmp_path, _dataset())
    path = image_dir / "v1" / "001.png"
    if problem == "missing":
        path.unlink()
    elif problem == "truncated":
        path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    else:
        Image.new("RGB", (W, H + 2)).save(path)
    (video,) = coco_video.load_coco_videos(ann_path, image_dir)
    with pytest.raises(ValueError, match=re.escape(str(path))):
        _clips(video, tmp_path / "shards")
    assert not (tmp_path / "shards").exists()  # nothing half-written
