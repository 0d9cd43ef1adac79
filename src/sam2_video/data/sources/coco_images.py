"""Static COCO images (COCO 2017, or any COCO JSON without video ids) as sources.

Each image is a one-frame source that the loader turns into pseudo-video by synthesized
motion (`data/motion.py`) when a clip is read. Objects are annotation instances (object
id = annotation id); crowd annotations are left out unless asked for. The JSON is checked
by the one validator (`validate`), which raises its first error here; annotations
without a mask (box-only) are skipped with its warning.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

import numpy as np

from sam2_video.data.sources import validate
from sam2_video.data.sources.coco_video import ObjectAnnotation, annotation_masks
from sam2_video.data.sources.frames import file_safe_name
from sam2_video.files import read_json


@dataclass(frozen=True)
class StaticImage:
    """One image of a COCO JSON and its objects (a one-frame, still `Source`).

    size is (H, W) as the JSON states; objects are (annotation id, annotation) pairs.
    """

    name: str  # file-safe, unique in the dataset: the clip's name
    source: Path  # the JSON file, named in error messages
    path: Path
    size: tuple[int, int]
    image_id: int
    objects: tuple[ObjectAnnotation, ...] = field(repr=False)
    still = True
    num_frames = 1

    def frame_path(self, index: int) -> Path:
        return self.path

    def frame_size(self, index: int) -> tuple[int, int]:
        return self.size

    def frame_masks(self, index: int) -> dict[int, np.ndarray]:
        return annotation_masks(self.objects, self.size, self.source)


def _image_name(file_name: str) -> str:
    return file_safe_name(str(PurePosixPath(file_name.replace("\\", "/")).with_suffix("")))


def _instances_by_image(annotations: list[Any], crowd: bool) -> dict[int, list[ObjectAnnotation]]:
    by_image: dict[int, list[ObjectAnnotation]] = {}
    for ann in annotations:
        if validate.has_mask(ann) and (crowd or not ann.get("iscrowd", 0)):
            by_image.setdefault(ann["image_id"], []).append((ann["id"], ann))
    return by_image


def load_coco_images(
    ann_path: Path,
    image_dir: Path,
    *,
    include_crowd: bool = False,
    warnings: list[validate.Problem] | None = None,
) -> list[StaticImage]:
    """Images of a COCO JSON (video ids, if any, are ignored), sorted by image id.

    Objects are annotation instances; `iscrowd: 1` annotations (one region of many
    instances) are left out unless include_crowd. Images without objects are kept (the
    shard stage skips them as no_object_on_first_frame). Raises ValueError naming the
    file, the entry and the field for the first malformed entry. Annotations without a
    mask (box-only) are skipped; warnings: a list that gets the validator's warnings.
    """
    ann_path, image_dir = Path(ann_path), Path(image_dir)
    data = read_json(ann_path)
    found = validate.raise_first_error(data, ann_path, validate.IMAGES)
    if warnings is not None:
        warnings += found
    objects = _instances_by_image(data["annotations"], include_crowd)
    static = [
        StaticImage(
            name=_image_name(image["file_name"]),
            source=ann_path,
            path=image_dir / image["file_name"],
            size=(image["height"], image["width"]),
            image_id=image["id"],
            objects=tuple(objects.get(image["id"], ())),
        )
        for image in sorted(data["images"], key=lambda image: image["id"])
    ]
    _check_unique_names(static, ann_path)
    return static


def _check_unique_names(images: list[StaticImage], path: Path) -> None:
    owner: dict[str, int] = {}
    for image in images:
        if image.name in owner:
            raise ValueError(
                f"{path}: image id={image.image_id}: file_name maps to the clip name "
                f"{image.name!r} of image id={owner[image.name]}: give each image its own "
                "file_name (letters, digits, '.', '_', '-' and '/' tell them apart)"
            )
        owner[image.name] = image.image_id
