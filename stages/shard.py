"""shard: the source described by data/raw/source.json -> clip shards in data/shards/{train,val}.

COCO-format video gives sliding-window clips; static COCO images give one pseudo-video clip
each (synthesized motion); DAVIS folders give sliding-window clips. Without a val split,
the last `fetch.val_fraction` of videos/images (in their sorted order) are held out, so the
validation clips are fixed.
"""

from __future__ import annotations

import functools
import math
from pathlib import Path

from sam2_video.data import coco, davis_source, motion, shards
from sam2_video.files import read_json
from sam2_video.params import ShardParams, load_params, to_dict

RAW, OUT = Path("data/raw"), Path("data/shards")


def clip_function(kind: str, p: ShardParams):
    common = {"max_objects": p.max_objects, "min_area": p.min_area,
              "image_size_max_side": p.max_side}  # fmt: skip
    if kind == "coco_images":
        m = p.motion
        moves = motion.MotionParams(
            rotation=m.rotation, scale=m.scale, shear=m.shear, translate=m.translate,
            frame_rotation=m.frame_rotation, frame_scale=m.frame_scale,
            frame_shear=m.frame_shear, frame_translate=m.frame_translate,
            crop_area=m.crop_area, brightness=m.brightness, contrast=m.contrast,
            saturation=m.saturation,
        )  # fmt: skip
        return functools.partial(motion.static_image_clips, clip_length=p.clip_length,
                                 motion=moves, **common)  # fmt: skip
    video_fn = davis_source.davis_video_clips if kind == "davis" else coco.video_clips
    return functools.partial(video_fn, clip_length=p.clip_length, stride=p.stride, **common)


def load_sources(kind: str, split: dict, p: ShardParams) -> list:
    ann, images = Path(split["annotations"]), Path(split["images"])
    if kind == "coco_images":
        return motion.load_coco_images(ann, images, include_crowd=p.include_crowd)
    return coco.load_coco_videos(ann, images)


def split_sources(source: dict, p: ShardParams) -> dict[str, list]:
    kind = source["kind"]
    if kind == "davis":
        everything = davis_source.load_davis_videos(Path(source["root"]))
        splits = {"train": everything}
    else:
        splits = {name: load_sources(kind, s, p) for name, s in source["splits"].items()}
    if "val" not in splits:
        items = splits["train"]
        n_val = max(1, math.ceil(len(items) * source["val_fraction"]))
        if n_val >= len(items):
            raise ValueError(f"{RAW / 'source.json'}: {len(items)} videos/images are too few "
                             "to hold out a validation split; add data or a val.json")  # fmt: skip
        splits = {"train": items[:-n_val], "val": items[-n_val:]}
    return splits


def main() -> None:
    p = load_params().shard
    source = read_json(RAW / "source.json")
    clip_fn = clip_function(source["kind"], p)
    for split, items in split_sources(source, p).items():
        manifest = shards.build_split(
            items, clip_fn, OUT / split, seed=p.seed, workers=p.workers,
            clips_per_shard=p.clips_per_shard, params=to_dict(p), progress=True,
        )  # fmt: skip
        if manifest["num_clips"] == 0:
            raise ValueError(f"shard: the {split} split has no clip (skips: "
                             f"{manifest['skips']}); check clip_length and min_area")  # fmt: skip
        print(f"shard: {split}: {manifest['num_clips']} clips, skipped {manifest['skips']}")


if __name__ == "__main__":
    main()
