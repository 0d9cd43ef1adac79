"""COCO-format *video* datasets: JSON -> videos (sources).

A video dataset is a COCO JSON whose `images[*]` carry `video_id` and a frame order
(`order_in_video`, else `frame_id`, else `frame_index`). Annotations carry compressed RLE
(`counts` str), uncompressed RLE (`counts` list) or polygons (list of coordinate lists).

Objects are tracks when the file has track ids (`track_id`, `instance_id` or
`attributes.track_id`), else categories (one union mask per category per frame, as the
seed project did). Several annotations of one object on one frame are merged (union);
`iscrowd` annotations are kept as part of their object. Annotations without a mask (a
box-only one, `"segmentation": []` with a bbox, as CVAT exports boxes) are skipped. The
JSON is checked by the one validator (`validate`), which raises its first error here and
hands back its warnings (what is skipped: count and example ids).

A JSON whose images carry no `video_id` at all is one video (an annotation tool's export
of one video task, e.g. CVAT's "COCO 1.0": `frame_000000.PNG`, `attributes.track_id`):
frames in file-name order (natural sort), the video named after the JSON's stem.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from sam2_video.data.sources import VideoFiles, validate
from sam2_video.data.sources.frames import file_safe_name
from sam2_video.data.sources.masks import decode_segmentation
from sam2_video.files import read_json

ObjectAnnotation = tuple[int, Mapping[str, Any]]  # (object id, COCO annotation)


def annotation_masks(
    objects: Sequence[ObjectAnnotation], size: tuple[int, int], json_path: Path
) -> dict[int, np.ndarray]:
    """object id -> (H, W) bool union of its annotations (decoded by pycocotools)."""
    masks: dict[int, np.ndarray] = {}
    for object_id, ann in objects:
        try:
            mask = decode_segmentation(ann.get("segmentation"), *size)
        except ValueError as err:
            raise ValueError(f"{json_path}: annotation id={ann.get('id')}: {err}") from None
        masks[object_id] = masks[object_id] | mask if object_id in masks else mask
    return masks


@dataclass(frozen=True)
class CocoVideo(VideoFiles):
    """One video of a COCO JSON (a `Source`); masks stay encoded until they are stored.

    frame_sizes are (H, W) as the JSON states; frame_objects[t] lists (object id,
    annotation) pairs of frame t (an object may appear in several pairs: they are merged).
    """

    name: str
    source: Path  # the JSON file, named in error messages
    frame_paths: tuple[Path, ...]
    frame_sizes: tuple[tuple[int, int], ...]
    frame_image_ids: tuple[int, ...]
    frame_objects: tuple[tuple[ObjectAnnotation, ...], ...] = field(repr=False)

    def frame_size(self, index: int) -> tuple[int, int]:
        return self.frame_sizes[index]

    def frame_masks(self, index: int) -> dict[int, np.ndarray]:
        return annotation_masks(self.frame_objects[index], self.frame_sizes[index], self.source)


def _image_order(image: Mapping[str, Any]) -> int:
    return next(image[key] for key in validate.ORDER_FIELDS if key in image)


def _order_key(images: list[dict[str, Any]], mode: str) -> Callable[[Mapping[str, Any]], int]:
    """Frame order of an image: its order field, or its rank in file-name order (one video)."""
    if mode == validate.SINGLE_VIDEO:
        rank = validate.single_video_order(images)
        return lambda image: rank[image["id"]]
    return _image_order


def _video_sort_key(video_id: int | str) -> tuple[int, int | str]:
    return (1, video_id) if isinstance(video_id, str) else (0, video_id)


def _objects_by_image(annotations: list[dict[str, Any]]) -> dict[int, list[ObjectAnnotation]]:
    """image id -> [(object id, annotation)]: object = track when the file has tracks."""
    annotations = [a for a in annotations if validate.has_mask(a)]
    use_tracks = any(validate.track_id(a) is not None for a in annotations)
    by_image: dict[int, list[ObjectAnnotation]] = {}
    for ann in annotations:
        object_id = validate.track_id(ann) if use_tracks else ann["category_id"]
        by_image.setdefault(ann["image_id"], []).append((object_id, ann))
    return by_image


def _build_video(
    video_id: int | str,
    frames: list[dict[str, Any]],
    objects: Mapping[int, list[ObjectAnnotation]],
    path: Path,
    image_dir: Path,
    order: Callable[[Mapping[str, Any]], int],
) -> CocoVideo:
    ordered = sorted(frames, key=order)
    return CocoVideo(
        name=file_safe_name(str(video_id)),
        source=path,
        frame_paths=tuple(image_dir / image["file_name"] for image in ordered),
        frame_sizes=tuple((image["height"], image["width"]) for image in ordered),
        frame_image_ids=tuple(image["id"] for image in ordered),
        frame_objects=tuple(tuple(objects.get(image["id"], ())) for image in ordered),
    )


def load_coco_videos(
    ann_path: Path, image_dir: Path, *, warnings: list[validate.Problem] | None = None
) -> list[CocoVideo]:
    """Videos of a COCO video JSON, sorted by video id; frames in their stated order (a
    JSON without video ids: one video, frames in file-name order).

    Raises ValueError naming the file, the entry and the field for the first malformed
    entry (`validate`'s checks; image files are read when the sources are stored).
    warnings: a list that gets the validator's warnings (what is skipped).
    """
    ann_path, image_dir = Path(ann_path), Path(image_dir)
    data = read_json(ann_path)
    found = validate.raise_first_error(data, ann_path, validate.VIDEO)
    if warnings is not None:
        warnings += found
    objects = _objects_by_image(data["annotations"])
    mode = validate.read_mode(data, validate.VIDEO)
    order = _order_key(data["images"], mode)
    by_video: dict[int | str, list[dict[str, Any]]] = {}
    for image in data["images"]:
        video_id = ann_path.stem if mode == validate.SINGLE_VIDEO else image["video_id"]
        by_video.setdefault(video_id, []).append(image)
    videos = [
        _build_video(vid, by_video[vid], objects, ann_path, image_dir, order)
        for vid in sorted(by_video, key=_video_sort_key)
    ]
    _check_unique_names(videos, ann_path)
    return videos


def _check_unique_names(videos: Sequence[CocoVideo], path: Path) -> None:
    names: set[str] = set()
    for video in videos:
        if video.name in names:
            raise ValueError(
                f"{path}: two video ids map to the same file-safe name {video.name!r}: "
                "make video ids differ in letters, digits, '.', '_' or '-'"
            )
        names.add(video.name)
