"""shard: the source described by data/raw/source.json -> source shards in
data/shards/{train,tune,val} (tune: held out of train for train-time validation).

COCO-format video, DAVIS folders and the SA-V layout give videos; static COCO images give
one-frame sources (made into pseudo-video when clips are read). Without a val split, the
last `fetch.val_fraction` of videos/images (in their sorted order) are held out, so the
validation clips are fixed. What the readers skip (annotations without a mask) is printed
as the validator's warnings; the train split keeps every video at least train.clip_length
frames long (training windows), the others those of shard.clip_length (fixed clips).
"""

from __future__ import annotations

import math
from pathlib import Path

from sam2_video.data import sampling, shards
from sam2_video.data.sources import coco_images, coco_video, davis, sav
from sam2_video.errors import run_stage
from sam2_video.files import read_json
from sam2_video.params import ShardParams, load_params

RAW, OUT = Path("data/raw"), Path("data/shards")
SHOWN_WARNINGS = 5  # warning lines printed per file; `sam2-video check` lists them all


def load_sources(kind: str, split: dict, p: ShardParams) -> list:
    ann, images = Path(split["annotations"]), Path(split["images"])
    warnings: list = []
    try:
        if kind == "coco_images":
            return coco_images.load_coco_images(
                ann, images, include_crowd=p.include_crowd, warnings=warnings
            )
        return coco_video.load_coco_videos(ann, images, warnings=warnings)
    except ValueError as err:  # the first problem; the checker lists them all at once
        raise ValueError(f"{err} (`sam2-video check {ann} {images}` lists every problem)") from None
    finally:
        print_warnings(warnings, f"sam2-video check {ann} {images}")


def print_warnings(warnings: list, check: str) -> None:
    """The first SHOWN_WARNINGS warning lines and the count of the rest."""
    for problem in warnings[:SHOWN_WARNINGS]:
        print(f"shard: {problem}")
    if len(warnings) > SHOWN_WARNINGS:
        print(f"shard: ... {len(warnings) - SHOWN_WARNINGS} more warnings (`{check}` lists them)")


def split_sources(source: dict, p: ShardParams) -> dict[str, list]:
    kind = source["kind"]
    if kind == "davis":
        splits = {"train": davis.load_davis_videos(Path(source["root"]))}
    elif kind == "sav":
        splits = {"train": sav.load_sav_videos(Path(source["root"]))}
    else:
        splits = {name: load_sources(kind, s, p) for name, s in source["splits"].items()}
    if "val" not in splits:
        items = splits["train"]
        n_val = max(1, math.ceil(len(items) * source["val_fraction"]))
        if n_val >= len(items):
            raise ValueError(
                f"{RAW / 'source.json'}: {len(items)} videos/images are too few to hold out "
                "a validation split; add data or a val.json"
            )
        splits = {"train": items[:-n_val], "val": items[-n_val:]}
    return hold_out_tune(splits, p.tune_fraction)


def hold_out_tune(splits: dict[str, list], fraction: float) -> dict[str, list]:
    """The last `fraction` of the train split (at least one) as the `tune` split: the
    train stage's validation (best step, early stop), kept apart from the val split that
    evaluate scores, so the reported numbers are not selected on their own test set."""
    if fraction == 0:
        return splits
    items = splits["train"]
    n_tune = max(1, math.ceil(len(items) * fraction))
    if n_tune >= len(items):
        raise ValueError(
            f"params.yaml: shard.tune_fraction: {len(items)} training videos/images are too "
            "few to hold some out for train-time validation; add data or set it to 0"
        )
    return {**splits, "train": items[:-n_tune], "tune": items[-n_tune:]}


def build_splits(source: dict, p: ShardParams, train_length: int, out: Path = OUT) -> dict:
    """Shard every split into out/<split>; {split: manifest}. The train split keeps videos
    of at least train_length frames (a training window); the others, scored whole, of at
    least 3 (first and last frames are not scored), or shard.clip_length (val_windows)."""
    scored = p.clip_length if p.val_windows else sampling.MIN_WHOLE_VIDEO_FRAMES
    manifests = {}
    for split, items in split_sources(source, p).items():
        length = min(train_length, p.clip_length) if split == "train" else scored
        manifest = shards.build_split(items, out / split, p, progress=True, min_length=length)
        if manifest["num_sources"] == 0:
            raise ValueError(
                f"{out / split}: the {split} split has no usable video/image (skips: "
                f"{manifest['skips']}); check shard.clip_length, train.clip_length and "
                "shard.min_area"
            )
        ratio = manifest["total_bytes"] / max(manifest["source_bytes"], 1)
        print(
            f"shard: {split}: {manifest['num_sources']} sources, skipped {manifest['skips']}"
            f" (videos need {length} frames), {ratio:.2f}x the source files' bytes"
        )
        manifests[split] = manifest
    return manifests


def main() -> None:
    params = load_params()
    build_splits(read_json(RAW / "source.json"), params.shard, params.train.clip_length)


if __name__ == "__main__":
    run_stage("shard", main)
