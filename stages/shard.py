"""shard: COCO-format video under data/raw -> clip shards in data/shards/{train,val}."""

from __future__ import annotations

import functools
from pathlib import Path

from sam2_video.data import coco, shards
from sam2_video.params import load_params, to_dict

RAW, OUT = Path("data/raw"), Path("data/shards")


def main() -> None:
    p = load_params().shard
    clip_fn = functools.partial(
        coco.video_clips, clip_length=p.clip_length, stride=p.stride, max_objects=p.max_objects,
        min_area=p.min_area, image_size_max_side=p.max_side,
    )  # fmt: skip
    for split in ("train", "val"):
        videos = coco.load_coco_videos(RAW / split / "annotations.json", RAW / split)
        manifest = shards.build_split(
            videos, clip_fn, OUT / split, seed=p.seed, workers=p.workers,
            clips_per_shard=p.clips_per_shard, params=to_dict(p), progress=True,
        )  # fmt: skip
        print(f"shard: {split}: {manifest['num_clips']} clips, skipped {manifest['skips']}")


if __name__ == "__main__":
    main()
