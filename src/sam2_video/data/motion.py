"""Static COCO images -> pseudo-video clips by synthesized motion.

The static-image pretraining recipe of STCN / XMem / Cutie (and AOT's COCO pretraining):
every frame of a clip is the same image seen through a random affine transform, so the
model must re-find each object after it rotated, scaled, sheared and moved.

Frame t of a clip is `frame_affine[t] @ clip_affine @ crop` applied to the (resized) image:
  crop          optional random crop (zoom in), drawn once per clip
  clip_affine   rotation / scale / x-shear about the centre plus a translation, once per clip
  frame_affine  the same kinds with smaller ranges, drawn independently for every frame
then per-frame colour jitter (brightness, contrast, saturation). Image and masks are warped
by the same matrix: the image with PIL bilinear, the masks with exact pixel-centre nearest
neighbour (the sampling rule PIL's NEAREST uses). An object warped out of view has an empty
mask on that frame; translations are whole pixels so that a pure translation is lossless.

Objects are annotation instances (object id = annotation id); crowd annotations are left
out unless asked for.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

import numpy as np
from PIL import Image

from sam2_video.data.clips import Clip, objects_on_first_frame
from sam2_video.data.coco import (
    SKIP_NO_OBJECT,
    ObjectAnnotation,
    category_ids,
    check_annotation,
    check_image_fields,
    describe_annotation,
    read_rgb,
    require_coco,
    resize_frame,
    target_size,
    video_name,
)
from sam2_video.data.rle import (
    bulk_segmentation_runs,
    is_int,
    resize_runs,
    runs_area,
    segmentation_runs,
)
from sam2_video.files import read_json

# Warped-in border: ImageNet's mean colour, as XMem fills its affine warps.
FILL_RGB = (124, 116, 104)
_GRAY_WEIGHTS = np.array([0.299, 0.587, 0.114], dtype=np.float32)  # ITU-R 601 luma


# ---------------------------------------------------------------------------- parameters


def _as_range(value: Any, name: str) -> tuple[float, float]:
    try:
        low, high = (float(v) for v in value)
    except (TypeError, ValueError):
        raise ValueError(f"motion '{name}' must be a (low, high) pair, got {value!r}") from None
    if not 0 < low <= high:
        raise ValueError(f"motion '{name}' must be (low, high) with 0 < low <= high, got {value}")
    return low, high


@dataclass(frozen=True)
class MotionParams:
    """Ranges of the synthesized motion; each value is drawn uniformly in its range.

    Angles in degrees (+/-), translations as a fraction of the frame width/height (+/-),
    scales and crop_area as (low, high) factors, colour jitter as +/- around factor 1.
    crop_area is the fraction of the frame a per-clip crop keeps (1, 1 = no crop).
    """

    rotation: float = 20.0
    scale: tuple[float, float] = (0.9, 1.1)
    shear: float = 10.0
    translate: float = 0.1
    frame_rotation: float = 5.0
    frame_scale: tuple[float, float] = (0.97, 1.03)
    frame_shear: float = 2.0
    frame_translate: float = 0.03
    crop_area: tuple[float, float] = (1.0, 1.0)
    brightness: float = 0.1
    contrast: float = 0.05
    saturation: float = 0.05

    def __post_init__(self) -> None:
        for name in ("scale", "frame_scale", "crop_area"):
            object.__setattr__(self, name, _as_range(getattr(self, name), name))  # lists too
        if self.crop_area[1] > 1:
            raise ValueError(f"motion 'crop_area' must be within (0, 1], got {self.crop_area}")
        limits = {"rotation": 180, "frame_rotation": 180, "shear": 89, "frame_shear": 89,
                  "translate": 1, "frame_translate": 1, "brightness": 0.99, "contrast": 0.99,
                  "saturation": 0.99}  # fmt: skip
        for name, limit in limits.items():
            if not 0 <= getattr(self, name) <= limit:
                raise ValueError(
                    f"motion '{name}' must be within [0, {limit}], got {getattr(self, name)}"
                )

    @classmethod
    def identity(cls) -> MotionParams:
        """No motion, no crop, no jitter: every frame is the resized image."""
        return cls(
            rotation=0.0, scale=(1.0, 1.0), shear=0.0, translate=0.0,
            frame_rotation=0.0, frame_scale=(1.0, 1.0), frame_shear=0.0, frame_translate=0.0,
            crop_area=(1.0, 1.0), brightness=0.0, contrast=0.0, saturation=0.0,
        )  # fmt: skip


# ---------------------------------------------------------------------------- affine maths


def affine_matrix(
    size: tuple[int, int],
    rotation: float,
    scale: float,
    shear: float,
    translate: tuple[float, float],
) -> np.ndarray:
    """(3, 3) forward map of pixel coordinates (x, y) of an (H, W) frame.

    Rotation (degrees), scale and x-shear (degrees) act about the frame centre, then the
    frame moves by translate = (dx, dy) pixels (torchvision's RandomAffine composition).
    """
    height, width = size
    theta, phi = math.radians(rotation), math.radians(shear)
    rotate = np.array([[math.cos(theta), -math.sin(theta)], [math.sin(theta), math.cos(theta)]])
    linear = scale * rotate @ np.array([[1.0, math.tan(phi)], [0.0, 1.0]])
    centre = np.array([width / 2, height / 2])
    matrix = np.eye(3)
    matrix[:2, :2] = linear
    matrix[:2, 2] = centre + np.asarray(translate, dtype=float) - linear @ centre
    return matrix


def _invert_affine(matrix: np.ndarray) -> np.ndarray:
    """(2, 3) inverse of a (3, 3) affine; exact for identity and pure translations."""
    (a, b), (c, d) = matrix[:2, :2]
    det = a * d - b * c
    inverse_linear = np.array([[d, -b], [-c, a]]) / det
    return np.concatenate([inverse_linear, -inverse_linear @ matrix[:2, 2:3]], axis=1)


def warp_masks(masks: np.ndarray, matrix: np.ndarray) -> np.ndarray:
    """(O, H, W) bool warped by the forward affine `matrix`; outside the source is False.

    Output pixel (x, y) takes source pixel floor(inverse @ (x + 0.5, y + 0.5)), the
    pixel-centre rule of PIL's NEAREST, in one gather for all objects.
    """
    _, height, width = masks.shape
    inverse = _invert_affine(matrix)
    ys, xs = np.mgrid[0:height, 0:width] + 0.5
    cols = np.floor(inverse[0, 0] * xs + inverse[0, 1] * ys + inverse[0, 2]).astype(np.int64)
    rows = np.floor(inverse[1, 0] * xs + inverse[1, 1] * ys + inverse[1, 2]).astype(np.int64)
    inside = (cols >= 0) & (cols < width) & (rows >= 0) & (rows < height)  # (H, W)
    warped = np.zeros_like(masks)
    warped[:, inside] = masks[:, rows[inside], cols[inside]]
    return warped


def warp_image(rgb: np.ndarray, matrix: np.ndarray) -> np.ndarray:
    """(H, W, 3) uint8 warped by the forward affine `matrix` (PIL bilinear, mean-colour fill)."""
    height, width = rgb.shape[:2]
    data = tuple(float(v) for v in _invert_affine(matrix).reshape(-1))  # output -> input
    warped = Image.fromarray(rgb).transform(
        (width, height), Image.Transform.AFFINE, data, Image.Resampling.BILINEAR,
        fillcolor=FILL_RGB,
    )  # fmt: skip
    return np.asarray(warped)


# ---------------------------------------------------------------------------- random draws


def _draw_affine(
    rng: np.random.Generator,
    size: tuple[int, int],
    rotation: float,
    scale: tuple[float, float],
    shear: float,
    translate: float,
) -> np.ndarray:
    height, width = size
    # Whole-pixel translations (as torchvision rounds them): a pure translation stays exact.
    shift = np.round(rng.uniform(-translate, translate, 2) * np.array([width, height]))
    return affine_matrix(
        size, rng.uniform(-rotation, rotation), rng.uniform(*scale),
        rng.uniform(-shear, shear), (float(shift[0]), float(shift[1])),
    )  # fmt: skip


def _draw_crop(rng: np.random.Generator, size: tuple[int, int], area: tuple[float, float]):
    """(3, 3) zoom that maps a random crop (same aspect, `area` of the frame) onto the frame."""
    height, width = size
    side = math.sqrt(rng.uniform(*area))
    left, top = rng.uniform(0, 1 - side, 2) * np.array([width, height])
    return np.array([[1 / side, 0, -left / side], [0, 1 / side, -top / side], [0, 0, 1]])


def draw_frame_affines(
    motion: MotionParams, clip_length: int, size: tuple[int, int], rng: np.random.Generator
) -> list[np.ndarray]:
    """One (3, 3) forward affine per frame: frame_affine[t] @ clip_affine @ crop."""
    crop = _draw_crop(rng, size, motion.crop_area)
    clip_affine = _draw_affine(
        rng, size, motion.rotation, motion.scale, motion.shear, motion.translate
    )
    return [
        _draw_affine(rng, size, motion.frame_rotation, motion.frame_scale, motion.frame_shear,
                     motion.frame_translate) @ clip_affine @ crop
        for _ in range(clip_length)
    ]  # fmt: skip


def jitter_colours(
    rgb: np.ndarray, brightness: float, contrast: float, saturation: float
) -> np.ndarray:
    """(H, W, 3) uint8 with colour factors applied (1.0 = unchanged), torchvision's formulas."""
    image = rgb.astype(np.float32) * brightness
    gray_mean = float((image @ _GRAY_WEIGHTS).mean())
    image = (image - gray_mean) * contrast + gray_mean
    gray = (image @ _GRAY_WEIGHTS)[..., None]  # (H, W, 1)
    image = (image - gray) * saturation + gray
    return np.clip(np.rint(image), 0, 255).astype(np.uint8)


def _draw_jitter(rng: np.random.Generator, motion: MotionParams) -> tuple[float, float, float]:
    brightness, contrast, saturation = (
        float(rng.uniform(1 - r, 1 + r))
        for r in (motion.brightness, motion.contrast, motion.saturation)
    )
    return brightness, contrast, saturation


# ---------------------------------------------------------------------------- COCO JSON


@dataclass(frozen=True)
class StaticImage:
    """One image of a COCO JSON and its objects; masks stay encoded until a clip needs them.

    size is (H, W) as the JSON states; objects are (annotation id, annotation) pairs.
    """

    name: str  # file-safe, unique in the dataset: the clip's name
    source: Path  # the JSON file, named in error messages
    path: Path
    size: tuple[int, int]
    image_id: int
    objects: tuple[ObjectAnnotation, ...] = field(repr=False)


def _check_static_image(image: Any, index: int, path: Path) -> None:
    check_image_fields(image, index, path)


def _index_static_images(images: list[Any], path: Path) -> dict[int, dict[str, Any]]:
    by_id: dict[int, dict[str, Any]] = {}
    for index, image in enumerate(images):
        _check_static_image(image, index, path)
        if image["id"] in by_id:
            raise ValueError(f"{path}: image id={image['id']}: duplicate image id in 'images'")
        by_id[image["id"]] = image
    return by_id


def _instances_by_image(
    annotations: list[Any], images: Mapping[int, Any], cats: set[int], path: Path, crowd: bool
) -> dict[int, list[ObjectAnnotation]]:
    """image id -> [(annotation id, annotation)], every annotation checked."""
    by_image: dict[int, list[ObjectAnnotation]] = {}
    seen: set[int] = set()
    for index, ann in enumerate(annotations):
        where = f"{path}: {describe_annotation(ann, index)}"
        problem = check_annotation(ann, images, cats)
        if problem:
            raise ValueError(f"{where}: {problem}")
        if not is_int(ann.get("id")) or ann["id"] in seen:
            raise ValueError(
                f"{where}: field 'id' missing, not an int or duplicate: static-image objects "
                "are annotation instances, identified by a unique annotation id"
            )
        seen.add(ann["id"])
        if crowd or not ann.get("iscrowd", 0):
            by_image.setdefault(ann["image_id"], []).append((ann["id"], ann))
    return by_image


def _image_name(file_name: str) -> str:
    return video_name(str(PurePosixPath(file_name.replace("\\", "/")).with_suffix("")))


def load_coco_images(
    ann_path: Path, image_dir: Path, *, include_crowd: bool = False
) -> list[StaticImage]:
    """Images of a COCO JSON (video ids, if any, are ignored), sorted by image id.

    Objects are annotation instances; `iscrowd: 1` annotations (one region of many
    instances) are left out unless include_crowd. Images without objects are kept (their
    clip is skipped as no_object_on_first_frame). Raises ValueError naming the file, the
    image/annotation id and the field for any malformed entry.
    """
    ann_path, image_dir = Path(ann_path), Path(image_dir)
    data = read_json(ann_path)
    require_coco(data, ann_path)
    images = _index_static_images(data["images"], ann_path)
    categories = category_ids(data["categories"], ann_path)
    objects = _instances_by_image(data["annotations"], images, categories, ann_path,
                                  include_crowd)  # fmt: skip
    static = [
        StaticImage(
            name=_image_name(image["file_name"]),
            source=ann_path,
            path=image_dir / image["file_name"],
            size=(image["height"], image["width"]),
            image_id=image_id,
            objects=tuple(objects.get(image_id, ())),
        )  # fmt: skip
        for image_id, image in sorted(images.items())
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


# ---------------------------------------------------------------------------- clips


def _candidate_masks(
    image: StaticImage, min_area: int, size: tuple[int, int]
) -> tuple[list[int], np.ndarray]:
    """Ids and (C, h, w) masks resized to `size` of the objects with area >= max(min_area, 1)
    (at source resolution); masks are resized from their runs, never decoded whole."""
    segms = [ann.get("segmentation") for _, ann in image.objects]
    found = bulk_segmentation_runs(segms, [image.size] * len(segms))
    ids, kept = [], []
    for (object_id, ann), runs in zip(image.objects, found, strict=True):
        if runs is None:  # bad or unusual input: checked one by one, in order
            try:
                runs = segmentation_runs(ann["segmentation"], *image.size)
            except ValueError as err:
                raise ValueError(f"{image.source}: annotation id={object_id}: {err}") from None
        if runs_area(runs) >= max(min_area, 1):
            ids.append(object_id)
            kept.append(runs)
    return ids, resize_runs(kept, image.size, size)


def static_image_clips(
    image: StaticImage,
    clip_length: int,
    max_objects: int,
    min_area: int,
    image_size_max_side: int | None,
    motion: MotionParams,
    rng: np.random.Generator,
    on_skip: Callable[[str], None] | None = None,
) -> Iterator[Clip]:
    """The one pseudo-video clip of a static image, named after the image.

    The image is resized (longer side <= image_size_max_side, as coco.video_clips), then
    frame t is that image under the t-th drawn affine (`draw_frame_affines`) with colour
    jitter. The clip's objects are those with area >= min_area (at source resolution) that
    are still visible on frame 0 after its warp, at most max_objects (drawn with `rng`);
    an object warped out of a later frame has an empty mask there. All randomness comes
    from `rng`. Yields nothing and calls on_skip(SKIP_NO_OBJECT) when no object qualifies.
    """
    if clip_length < 1 or max_objects < 1 or min_area < 0:
        raise ValueError("clip_length and max_objects must be >= 1 and min_area >= 0")
    size = target_size(*image.size, image_size_max_side)
    ids, masks = _candidate_masks(image, min_area, size)  # (C, h, w)
    affines = draw_frame_affines(motion, clip_length, size, rng)
    if ids:
        first = warp_masks(masks, affines[0])
        chosen = objects_on_first_frame(first[None], max_objects, rng)
    if not ids or not len(chosen):
        if on_skip is not None:
            on_skip(SKIP_NO_OBJECT)
        return
    rgb = resize_frame(read_rgb(image.path, image.size), size)
    frames = [jitter_colours(warp_image(rgb, a), *_draw_jitter(rng, motion)) for a in affines]
    clip_masks = [first[chosen]] + [warp_masks(masks[chosen], a) for a in affines[1:]]
    yield Clip(image.name, np.stack(frames), np.stack(clip_masks),  # (T, h, w, 3), (T, O, h, w)
               tuple(ids[i] for i in chosen))  # fmt: skip
