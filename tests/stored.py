"""Test data: COCO datasets of real JPEG files, and sources stored as shards in a test's
folder, read back with the reader."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from coco_rle import compressed_rle, uncompressed_rle
from PIL import Image

from sam2_video.data import shards
from sam2_video.data.sources import coco_images, coco_video
from sam2_video.params import ShardParams, defaults


def shard_params(**overrides) -> ShardParams:
    """The shard defaults (the tiny model's), one worker, validation windows (the fixed
    clips most tests here were written against; whole videos: val_windows=False), with
    `overrides`."""
    return dataclasses.replace(
        defaults().shard, **({"workers": 1, "val_windows": True} | overrides)
    )


def store(sources: Sequence, out: Path, **overrides) -> shards.ShardReader:
    """Shard `sources` into `out` with shard_params(**overrides); a reader of the result."""
    shards.build_split(sources, out, shard_params(**overrides))
    return shards.ShardReader(out)


def photo(rng: np.random.Generator, height: int, width: int) -> np.ndarray:
    """(H, W, 3) uint8 that compresses like a photo: smooth shapes, edges, mild noise."""
    yy, xx = np.mgrid[:height, :width] / max(height, width)
    base = np.stack([np.sin(6 * xx + c) + np.cos(5 * yy - 2 * c) for c in range(3)], -1)
    for _ in range(6):
        cy, cx, r = rng.uniform(0, 1, 3) * [height, width, max(height, width) / 4]
        disc = (np.mgrid[:height, :width][0] - cy) ** 2 + (np.mgrid[:height, :width][1] - cx) ** 2
        base[disc <= r * r] += rng.uniform(-1, 1, 3)
    noise = rng.normal(0, 0.03, (height, width, 3))
    return np.clip((base + noise + 2) * 60, 0, 255).astype(np.uint8)


def object_masks(t: int, height: int, width: int) -> list[np.ndarray]:
    """Three objects of frame t: a moving box, a disc, a box that leaves after frame 2."""
    yy, xx = np.mgrid[:height, :width]
    box = (abs(yy - height // 3) < height // 6) & (abs(xx - width // 4 - 3 * t) < width // 8)
    disc = (yy - height // 2) ** 2 + (xx - 2 * width // 3) ** 2 <= (height // 5) ** 2
    late = np.zeros((height, width), bool)
    if t <= 2:
        late[-height // 4 :, : width // 5] = True
    return [box, disc, late]


def write_coco(root: Path, videos: int, frames: int, size=(240, 320), video_ids=True) -> Path:
    """JPEG frames (quality 90) and a COCO JSON with RLE (both kinds) and polygons."""
    rng = np.random.default_rng(0)
    height, width = size
    images, anns = [], []
    for v in range(videos):
        for t in range(frames):
            name = f"v{v}/{t:05d}.jpg"
            (root / name).parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(photo(rng, height, width)).save(root / name, quality=90)
            image = {"id": len(images) + 1, "file_name": name, "height": height, "width": width}
            if video_ids:
                image |= {"video_id": v, "order_in_video": t}
            images.append(image)
            for k, mask in enumerate(object_masks(t, height, width)):
                if not mask.any():
                    continue
                segm = compressed_rle(mask) if k != 1 else uncompressed_rle(mask)
                anns.append(
                    {
                        "id": len(anns) + 1,
                        "image_id": image["id"],
                        "category_id": 1,
                        "segmentation": segm,
                        "track_id": k + 1,
                        "iscrowd": 0,
                    }
                )
    coco = {"images": images, "annotations": anns, "categories": [{"id": 1, "name": "x"}]}
    (root / "annotations.json").write_text(json.dumps(coco), encoding="utf-8")
    return root / "annotations.json"


def make_videos(root: Path, videos: int = 2, frames: int = 6, **kw) -> list:
    path = write_coco(root, videos, frames, **kw)
    return coco_video.load_coco_videos(path, root)


def make_images(root: Path, count: int = 4, **kw) -> list:
    path = write_coco(root, count, 1, video_ids=False, **kw)
    return coco_images.load_coco_images(path, root)


# ---------------------------------------------------------------------------- users' layouts

LAYOUT_SIZE = (48, 64)  # (H, W) of every frame the layout writers make


def _box(t: int, row: int, size=LAYOUT_SIZE) -> np.ndarray:
    """An 10x12 box on row band `row` (0..2), moving right 2 px a frame."""
    mask = np.zeros(size, bool)
    top, left = 4 + 14 * row, (2 + 2 * t) % (size[1] - 12)
    mask[top : top + 10, left : left + 12] = True
    return mask


def _jpeg(path: Path, rng: np.random.Generator, suffix_format: str = "JPEG") -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(photo(rng, *LAYOUT_SIZE)).save(path, suffix_format, quality=90)


def write_video_coco(root: Path, name: str, videos: dict, *, tracks: bool = True) -> Path:
    """A COCO video JSON `root/name`: videos {video id: (frames, first frame of object 2)};
    object 1 is on every frame, object 2 from its first frame on (a late object when > 0).
    Video "box" gets one box-only annotation (`"segmentation": []` with a bbox, as CVAT
    exports boxes) on its frame 1. tracks=False: no track ids (objects are categories)."""
    rng = np.random.default_rng(len(name))
    images, anns = [], []
    for video, (frames, late) in videos.items():
        for t in range(frames):
            file_name = f"{video}/{t:05d}.jpg"
            _jpeg(root / file_name, rng)
            image_id = len(images) + 1
            images.append(
                {
                    "id": image_id,
                    "file_name": file_name,
                    "height": LAYOUT_SIZE[0],
                    "width": LAYOUT_SIZE[1],
                    "video_id": video,
                    "order_in_video": t,
                }
            )
            for obj in (1, 2) if t >= late else (1,):
                ann = {
                    "id": len(anns) + 1,
                    "image_id": image_id,
                    "category_id": obj,
                    "segmentation": compressed_rle(_box(t, obj - 1)),
                    "iscrowd": 0,
                }
                anns.append(ann | ({"track_id": obj} if tracks else {}))
            if video == "box" and t == 1:
                box = {
                    "id": len(anns) + 1,
                    "image_id": image_id,
                    "category_id": 1,
                    "segmentation": [],
                    "bbox": [1, 1, 5, 5],
                    "iscrowd": 0,
                }
                anns.append(box | ({"track_id": 3} if tracks else {}))
    cats = [{"id": 1, "name": "a"}, {"id": 2, "name": "b"}]
    path = root / name
    path.write_text(json.dumps({"images": images, "annotations": anns, "categories": cats}))
    return path


def write_cvat_video(root: Path, frames: int = 12, name: str = "train.json") -> Path:
    """CVAT's "COCO 1.0" export of one video task: `frame_000000.PNG`..., no video_id, no
    frame order, `attributes.track_id` (from 0), masks as iscrowd uncompressed RLE and
    polygons, one box-only annotation; images listed in shuffled order."""
    rng = np.random.default_rng(7)
    images, anns = [], []
    for t in range(frames):
        file_name = f"frame_{t:06d}.PNG"
        _jpeg(root / file_name, rng, "PNG")
        images.append(
            {
                "id": t + 1,
                "width": LAYOUT_SIZE[1],
                "height": LAYOUT_SIZE[0],
                "file_name": file_name,
                "license": 0,
                "flickr_url": "",
                "coco_url": "",
                "date_captured": 0,
            }
        )
        top, left = 30, 4 + 2 * t
        polygon = [left, top, left + 10, top, left + 10, top + 8, left, top + 8]
        for track, segm, crowd in (
            (0, uncompressed_rle(_box(t, 0)), 1),
            (1, [[float(v) for v in polygon]], 0),
        ):
            anns.append(
                {
                    "id": len(anns) + 1,
                    "image_id": t + 1,
                    "category_id": 1,
                    "segmentation": segm,
                    "area": 0.0,
                    "bbox": [0, 0, 1, 1],
                    "iscrowd": crowd,
                    "attributes": {
                        "occluded": False,
                        "rotation": 0.0,
                        "track_id": track,
                        "keyframe": True,
                    },
                }
            )
        if t == 2:
            anns.append(
                {
                    "id": len(anns) + 1,
                    "image_id": t + 1,
                    "category_id": 1,
                    "segmentation": [],
                    "area": 30.0,
                    "bbox": [1, 1, 6, 5],
                    "iscrowd": 0,
                    "attributes": {"track_id": 2, "keyframe": True},
                }
            )
    images = [images[i] for i in np.random.default_rng(1).permutation(len(images))]
    coco = {
        "licenses": [],
        "info": {},
        "categories": [{"id": 1, "name": "thing", "supercategory": ""}],
        "images": images,
        "annotations": anns,
    }
    (root / name).write_text(json.dumps(coco))
    return root / name


def write_sav(root: Path, videos: dict[str, int], ann_every: int = 4) -> Path:
    """SA-V layout: JPEGImages_24fps/<video>/%05d.jpg (frames frames) and
    <video>_manual.json masklets every `ann_every`th frame (object 2 from the second
    annotation on, None on the third: an incomplete annotation SAM2's loader drops)."""
    rng = np.random.default_rng(3)
    for video, frames in videos.items():
        for t in range(frames):
            _jpeg(root / "JPEGImages_24fps" / video / f"{t:05d}.jpg", rng)
        masklet = []
        for i, t in enumerate(range(0, frames, ann_every)):
            late = _box(t, 1) if i >= 1 else np.zeros(LAYOUT_SIZE, bool)
            masklet.append([compressed_rle(_box(t, 0)), None if i == 2 else compressed_rle(late)])
        data = {"video_id": video, "masklet": masklet, "masklet_id": [0, 1], "masklet_num": 2}
        (root / f"{video}_manual.json").write_text(json.dumps(data))
    return root
