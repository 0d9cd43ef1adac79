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
    """The shard defaults (the tiny model's), one worker, with `overrides`."""
    return dataclasses.replace(defaults().shard, **({"workers": 1} | overrides))


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
