"""COCO-format *video* datasets: JSON -> videos -> sliding-window clips.

A video dataset is a COCO JSON whose `images[*]` carry `video_id` and a frame order
(`order_in_video`, else `frame_id`, else `frame_index`). Annotations carry compressed RLE
(`counts` str), uncompressed RLE (`counts` list) or polygons (list of coordinate lists).

Objects are tracks when the file has track ids (`track_id`, `instance_id` or
`attributes.track_id`), else categories (one union mask per category per frame, as the
seed project did). Several annotations of one object on one frame are merged (union);
`iscrowd` annotations are kept as part of their object.

Orientation: COCO annotations refer to the *stored* pixel array (pycocotools and the COCO
tools ignore EXIF), so frames are NOT rotated by their EXIF orientation tag; an image
whose stored size differs from the JSON's width/height is an error.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

import numpy as np
from PIL import Image
from pycocotools import mask as mask_utils

from sam2_video.data.clips import Clip, objects_on_first_frame, window_starts
from sam2_video.files import read_json

ORDER_FIELDS = ("order_in_video", "frame_id", "frame_index")
TRACK_FIELDS = ("track_id", "instance_id")  # then attributes.track_id

# Reasons passed to `on_skip` by `video_clips` (and counted in the shard manifest).
SKIP_SHORT_VIDEO = "video_shorter_than_clip"
SKIP_NO_OBJECT = "no_object_on_first_frame"

ObjectAnnotation = tuple[int, Mapping[str, Any]]  # (object id, COCO annotation)


@dataclass(frozen=True)
class CocoVideo:
    """One video of a COCO JSON; masks stay encoded until a clip needs them.

    frame_sizes are (H, W) as the JSON states; frame_objects[t] lists (object id,
    annotation) pairs of frame t (an object may appear in several pairs: they are merged).
    """

    name: str
    source: Path  # the JSON file, named in error messages
    frame_paths: tuple[Path, ...]
    frame_sizes: tuple[tuple[int, int], ...]
    frame_image_ids: tuple[int, ...]
    frame_objects: tuple[tuple[ObjectAnnotation, ...], ...] = field(repr=False)

    @property
    def num_frames(self) -> int:
        return len(self.frame_paths)


# ---------------------------------------------------------------------------- segmentation


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _rle_string_counts(counts: str | bytes) -> list[int]:
    """Run lengths of a compressed RLE string (port of pycocotools' rleFrString)."""
    data = counts.encode("ascii") if isinstance(counts, str) else counts
    runs: list[int] = []
    pos = 0
    while pos < len(data):
        value, shift, more = 0, 0, True
        while more:
            if pos >= len(data):
                raise ValueError("ends in the middle of a run length")
            char = data[pos] - 48
            value |= (char & 0x1F) << shift
            more = bool(char & 0x20)
            pos, shift = pos + 1, shift + 5
            if not more and char & 0x10:
                value |= -1 << shift  # sign extension, as the C code does
        if len(runs) > 2:
            value += runs[-2]  # runs after the third are stored as deltas
        runs.append(value)
    return runs


def _rle_problem(segm: Mapping[str, Any], height: int, width: int) -> str | None:
    size = segm.get("size")
    if not (isinstance(size, list | tuple) and len(size) == 2 and all(map(_is_int, size))):
        return f"RLE 'size' is {size!r}, expected [height, width]"
    if list(size) != [height, width]:
        return (
            f"RLE size {list(size)} disagrees with the image's [height, width] "
            f"[{height}, {width}]: fix the image entry or re-encode the mask"
        )
    counts = segm.get("counts")
    if isinstance(counts, list):
        if not all(_is_int(c) and c >= 0 for c in counts):
            return "uncompressed RLE 'counts' must be non-negative integers"
        if sum(counts) != height * width:
            return f"RLE counts sum to {sum(counts)}, expected height*width={height * width}"
    elif not isinstance(counts, str | bytes):
        return f"RLE 'counts' is {type(counts).__name__}, expected a string or list of ints"
    return None


def _polygon_problem(segm: list[Any]) -> str | None:
    if not segm:
        return "is an empty polygon list: remove the annotation or give a mask"
    for k, poly in enumerate(segm):
        if not isinstance(poly, list) or not all(isinstance(v, int | float) for v in poly):
            return f"polygon {k} is not a flat list of numbers [x1, y1, x2, y2, ...]"
        if len(poly) < 6 or len(poly) % 2:
            return (
                f"polygon {k} has {len(poly)} coordinates; a polygon needs at least 3 "
                "points (6 numbers, x/y pairs): fix or drop it"
            )
    return None


def segmentation_problem(segm: Any, height: int, width: int) -> str | None:
    """Why `segm` is not a usable COCO segmentation of an image (cheap structural check)."""
    if isinstance(segm, Mapping):
        return _rle_problem(segm, height, width)
    if isinstance(segm, list):
        return _polygon_problem(segm)
    return f"is {type(segm).__name__}, expected an RLE dict or a list of polygons"


def _check_compressed_counts(counts: str | bytes, height: int, width: int) -> None:
    # pycocotools silently returns uninitialised pixels when the runs fall short: check first.
    try:
        runs = _rle_string_counts(counts)
    except (ValueError, UnicodeEncodeError) as err:
        raise ValueError(
            f"field 'segmentation': compressed RLE counts are corrupt ({err})"
        ) from None
    if min(runs, default=0) < 0 or sum(runs) != height * width:
        raise ValueError(
            f"field 'segmentation': compressed RLE runs sum to {sum(runs)} (or are negative), "
            f"expected height*width={height * width}: re-encode the mask"
        )


def decode_segmentation(segm: Any, height: int, width: int) -> np.ndarray:
    """(H, W) bool mask of a COCO segmentation: compressed/uncompressed RLE or polygons."""
    problem = segmentation_problem(segm, height, width)
    if problem:
        raise ValueError(f"field 'segmentation' {problem}")
    if isinstance(segm, list):
        rle = mask_utils.merge(mask_utils.frPyObjects(segm, height, width))
    elif isinstance(segm["counts"], list):
        rle = mask_utils.frPyObjects(dict(segm), height, width)
    else:
        _check_compressed_counts(segm["counts"], height, width)
        rle = {"size": [height, width], "counts": segm["counts"]}
    return mask_utils.decode(rle).astype(bool)


# ---------------------------------------------------------------------------- JSON -> videos


def _describe_annotation(ann: Any, index: int) -> str:
    if isinstance(ann, dict) and "id" in ann:
        return f"annotation id={ann['id']}"
    return f"annotations[{index}] (no 'id')"


def _require_coco(data: Any, path: Path) -> None:
    if not isinstance(data, dict):
        raise ValueError(f"{path}: not a COCO JSON (top level is not an object)")
    for key in ("images", "annotations", "categories"):
        if not isinstance(data.get(key), list):
            raise ValueError(
                f"{path}: not a COCO JSON: field '{key}' missing or not a list "
                "(expected top-level 'images', 'annotations' and 'categories')"
            )


def _image_order(image: Mapping[str, Any], path: Path) -> int:
    for key in ORDER_FIELDS:
        if key in image:
            if not _is_int(image[key]):
                raise ValueError(f"{path}: image id={image['id']}: field '{key}' must be an int")
            return image[key]
    raise ValueError(
        f"{path}: image id={image['id']}: no frame order: add one of {', '.join(ORDER_FIELDS)}"
    )


def check_image_fields(image: Any, index: int, path: Path) -> str:
    """Checks shared by every COCO image entry (id, file_name, size); returns 'where' text."""
    if not isinstance(image, dict) or not _is_int(image.get("id")):
        raise ValueError(f"{path}: images[{index}]: field 'id' missing or not an int")
    where = f"{path}: image id={image['id']}"
    name = image.get("file_name")
    if not isinstance(name, str) or not name:
        raise ValueError(f"{where}: field 'file_name' missing or not a string")
    parts = PurePosixPath(name.replace("\\", "/")).parts
    if PurePosixPath(name).is_absolute() or ".." in parts:
        raise ValueError(f"{where}: field 'file_name' {name!r} must be relative to the image dir")
    for key in ("height", "width"):
        if not _is_int(image.get(key)) or image[key] < 1:
            raise ValueError(f"{where}: field '{key}' missing or not a positive int")
    return where


def _check_image(image: Any, index: int, path: Path) -> None:
    where = check_image_fields(image, index, path)
    if "video_id" not in image or not isinstance(image["video_id"], int | str):
        raise ValueError(
            f"{where}: field 'video_id' missing: this reader takes COCO *video* datasets; "
            "images without video ids are static images (use the static-image source)"
        )


def _index_images(images: list[Any], path: Path) -> dict[int, dict[str, Any]]:
    by_id: dict[int, dict[str, Any]] = {}
    for index, image in enumerate(images):
        _check_image(image, index, path)
        if image["id"] in by_id:
            raise ValueError(f"{path}: image id={image['id']}: duplicate image id in 'images'")
        by_id[image["id"]] = image
    return by_id


def _category_ids(categories: list[Any], path: Path) -> set[int]:
    ids = set()
    for index, cat in enumerate(categories):
        if not isinstance(cat, dict) or not _is_int(cat.get("id")):
            raise ValueError(f"{path}: categories[{index}]: field 'id' missing or not an int")
        ids.add(cat["id"])
    return ids


def _track_id(ann: Mapping[str, Any]) -> Any:
    for key in TRACK_FIELDS:
        if key in ann:
            return ann[key]
    attributes = ann.get("attributes")
    return attributes.get("track_id") if isinstance(attributes, dict) else None


def _check_annotation(ann: Any, images: Mapping[int, Any], cats: set[int]) -> str:
    """Why an annotation is unusable, or '' when it is fine (segmentation checked too)."""
    if not isinstance(ann, dict):
        return "is not an object"
    if ann.get("image_id") not in images:
        return f"field 'image_id' {ann.get('image_id')!r} is not an image id in 'images'"
    if ann.get("category_id") not in cats:
        return (
            f"field 'category_id' {ann.get('category_id')!r} is not a category id in 'categories'"
        )
    if ann.get("iscrowd", 0) not in (0, 1):
        return f"field 'iscrowd' is {ann['iscrowd']!r}, expected 0 or 1"
    image = images[ann["image_id"]]
    problem = segmentation_problem(ann.get("segmentation"), image["height"], image["width"])
    return f"field 'segmentation' {problem}" if problem else ""


def _annotation_objects(
    annotations: list[Any], images: Mapping[int, Any], cats: set[int], path: Path
) -> dict[int, list[ObjectAnnotation]]:
    """image id -> [(object id, annotation)]: object = track when the file has tracks."""
    use_tracks = any(isinstance(a, dict) and _track_id(a) is not None for a in annotations)
    seen_ids: set[Any] = set()
    by_image: dict[int, list[ObjectAnnotation]] = {}
    for index, ann in enumerate(annotations):
        problem = _check_annotation(ann, images, cats)
        where = f"{path}: {_describe_annotation(ann, index)}"
        if problem:
            raise ValueError(f"{where}: {problem}")
        if "id" in ann and ann["id"] in seen_ids:
            raise ValueError(f"{where}: duplicate annotation id")
        seen_ids.add(ann.get("id"))
        object_id = _track_id(ann) if use_tracks else ann["category_id"]
        if not _is_int(object_id):
            raise ValueError(
                f"{where}: field 'track_id' is {object_id!r}: other annotations of this file "
                "carry integer track ids (track_id/instance_id/attributes.track_id); give every "
                "annotation one, or none to use categories as objects"
            )
        by_image.setdefault(ann["image_id"], []).append((object_id, ann))
    return by_image


def _video_name(video_id: int | str) -> str:
    name = re.sub(r"[^A-Za-z0-9._-]", "_", str(video_id))
    return "_" + name if name.startswith(".") or not name else name


def _video_sort_key(video_id: int | str) -> tuple[int, int | str]:
    return (1, video_id) if isinstance(video_id, str) else (0, video_id)


def _build_video(
    video_id: int | str,
    frames: list[dict[str, Any]],
    objects: Mapping[int, list[ObjectAnnotation]],
    path: Path,
    image_dir: Path,
) -> CocoVideo:
    ordered = sorted(frames, key=lambda image: _image_order(image, path))
    orders = [_image_order(image, path) for image in ordered]
    for prev, cur, image in zip(orders, orders[1:], ordered[1:], strict=False):
        if prev == cur:
            raise ValueError(
                f"{path}: image id={image['id']}: frame order {cur} appears twice in video "
                f"{video_id!r}: give each frame of a video a distinct order_in_video/frame_id"
            )
    return CocoVideo(
        name=_video_name(video_id),
        source=path,
        frame_paths=tuple(image_dir / image["file_name"] for image in ordered),
        frame_sizes=tuple((image["height"], image["width"]) for image in ordered),
        frame_image_ids=tuple(image["id"] for image in ordered),
        frame_objects=tuple(tuple(objects.get(image["id"], ())) for image in ordered),
    )


def load_coco_videos(ann_path: Path, image_dir: Path) -> list[CocoVideo]:
    """Videos of a COCO video JSON, sorted by video id; frames in their stated order.

    Raises ValueError naming the file, the image/annotation id and the field for any
    malformed entry (structure only; RLE run lengths are checked when a mask is decoded).
    """
    ann_path, image_dir = Path(ann_path), Path(image_dir)
    data = read_json(ann_path)
    _require_coco(data, ann_path)
    images = _index_images(data["images"], ann_path)
    categories = _category_ids(data["categories"], ann_path)
    objects = _annotation_objects(data["annotations"], images, categories, ann_path)
    by_video: dict[int | str, list[dict[str, Any]]] = {}
    for image in images.values():
        by_video.setdefault(image["video_id"], []).append(image)
    videos = [
        _build_video(vid, by_video[vid], objects, ann_path, image_dir)
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


# ---------------------------------------------------------------------------- pixels


def target_size(height: int, width: int, max_side: int | None) -> tuple[int, int]:
    """(H, W) with the longer side at most `max_side`, aspect kept (round half up)."""
    longest = max(height, width)
    if max_side is None or longest <= max_side:
        return height, width
    scaled = [max(1, (2 * side * max_side + longest) // (2 * longest)) for side in (height, width)]
    return scaled[0], scaled[1]


def resize_frame(rgb: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """(H, W, 3) uint8 -> (h, w, 3) uint8 with PIL bilinear (antialiased when shrinking)."""
    if rgb.shape[:2] == size:
        return rgb
    image = Image.fromarray(rgb).resize((size[1], size[0]), Image.Resampling.BILINEAR)
    return np.asarray(image)


def resize_mask(mask: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """(H, W) bool -> (h, w) bool, nearest neighbour at pixel centres.

    Output pixel i takes source pixel floor((i + 0.5) * H / h), in exact integer arithmetic
    (PIL's NEAREST rounds in float and can pick the neighbour), same for columns.
    """
    (in_h, in_w), (out_h, out_w) = mask.shape, size
    if (in_h, in_w) == (out_h, out_w):
        return mask
    rows = ((2 * np.arange(out_h) + 1) * in_h) // (2 * out_h)
    cols = ((2 * np.arange(out_w) + 1) * in_w) // (2 * out_w)
    return mask[rows[:, None], cols[None, :]]


def read_rgb(path: Path, expected_size: tuple[int, int] | None = None) -> np.ndarray:
    """(H, W, 3) uint8 RGB of an image file in its stored orientation (no EXIF rotation).

    Grayscale, palette, RGBA (alpha dropped) and CMYK images are converted by PIL.
    expected_size: (H, W) the annotations assume; a mismatch is an error.
    """
    try:
        with Image.open(path) as image:
            image.load()
            rgb = np.asarray(image.convert("RGB"))
    except FileNotFoundError:
        raise ValueError(f"{path}: image file not found: check the image dir / file_name") from None
    except OSError as err:
        raise ValueError(
            f"{path}: cannot read image ({err}): the file is truncated or not an image; "
            "re-download or re-export it"
        ) from None
    if expected_size is not None and rgb.shape[:2] != tuple(expected_size):
        raise ValueError(
            f"{path}: image is {rgb.shape[0]}x{rgb.shape[1]} (HxW) but the JSON says "
            f"{expected_size[0]}x{expected_size[1]}: fix its height/width (annotations must "
            "match the stored pixels; EXIF orientation is not applied)"
        )
    return rgb


# ---------------------------------------------------------------------------- clips


@dataclass(frozen=True)
class _LoadedFrame:
    rgb: np.ndarray  # (h, w, 3) uint8, resized
    masks: dict[int, np.ndarray]  # object id -> (h, w) bool, resized
    areas: dict[int, int]  # object id -> pixel count at source resolution


def _frame_masks(video: CocoVideo, index: int) -> dict[int, np.ndarray]:
    """object id -> (H, W) bool union mask of frame `index` at source resolution."""
    height, width = video.frame_sizes[index]
    masks: dict[int, np.ndarray] = {}
    for object_id, ann in video.frame_objects[index]:
        try:
            mask = decode_segmentation(ann["segmentation"], height, width)
        except ValueError as err:
            raise ValueError(f"{video.source}: annotation id={ann.get('id')}: {err}") from None
        masks[object_id] = masks[object_id] | mask if object_id in masks else mask
    return masks


def _load_frame(video: CocoVideo, index: int, max_side: int | None) -> _LoadedFrame:
    source_size = video.frame_sizes[index]
    size = target_size(*source_size, max_side)
    rgb = read_rgb(video.frame_paths[index], source_size)
    masks = _frame_masks(video, index)
    return _LoadedFrame(
        rgb=resize_frame(rgb, size),
        masks={oid: resize_mask(mask, size) for oid, mask in masks.items()},
        areas={oid: int(mask.sum()) for oid, mask in masks.items()},
    )


class _FrameWindow:
    """Loaded frames of the current window: overlapping windows decode each frame once."""

    def __init__(self, video: CocoVideo, max_side: int | None) -> None:
        self.video, self.max_side = video, max_side
        self.frames: dict[int, _LoadedFrame] = {}

    def get(self, index: int) -> _LoadedFrame:
        if index not in self.frames:
            self.frames[index] = _load_frame(self.video, index, self.max_side)
        return self.frames[index]

    def drop_before(self, index: int) -> None:
        for old in [i for i in self.frames if i < index]:
            del self.frames[old]


def choose_objects(
    areas: Mapping[int, int],
    masks: Mapping[int, np.ndarray],
    max_objects: int,
    min_area: int,
    rng: np.random.Generator,
) -> list[int]:
    """Ids of a clip's objects (ascending): on its first frame, whose `areas` and resized
    `masks` are given, with area >= min_area, at most max_objects (seeded choice)."""
    candidates = sorted(oid for oid, area in areas.items() if area >= max(min_area, 1))
    if not candidates:
        return []
    first_masks = np.stack([masks[oid] for oid in candidates])[None]  # (1, C, h, w)
    return [candidates[i] for i in objects_on_first_frame(first_masks, max_objects, rng)]


def _stack_clip(
    video: CocoVideo, frames: list[_LoadedFrame], start: int, object_ids: list[int]
) -> Clip:
    shape = frames[0].rgb.shape
    for offset, frame in enumerate(frames):
        if frame.rgb.shape != shape:
            raise ValueError(
                f"{video.frame_paths[start + offset]}: frame size {frame.rgb.shape[:2]} differs "
                f"from {shape[:2]} of {video.frame_paths[start]} in video {video.name!r}: "
                "frames of a video must share one size"
            )
    empty = np.zeros(shape[:2], dtype=bool)
    masks = np.stack(
        [np.stack([f.masks.get(oid, empty) for oid in object_ids]) for f in frames]
    )  # (T, O, h, w)
    rgb = np.stack([f.rgb for f in frames])  # (T, h, w, 3)
    return Clip(f"{video.name}__{start:05d}", rgb, masks, tuple(object_ids))


def video_clips(
    video: CocoVideo,
    clip_length: int,
    stride: int,
    max_objects: int,
    min_area: int,
    image_size_max_side: int | None,
    rng: np.random.Generator,
    on_skip: Callable[[str], None] | None = None,
) -> Iterator[Clip]:
    """Sliding-window clips of one video, named "<video>__<first frame index:05d>".

    Frames are resized (longer side <= image_size_max_side, aspect kept; PIL bilinear for
    frames, pixel-centre nearest for masks). A clip's objects are those on its first frame
    with area >= min_area pixels (measured at source resolution) that survive the resize;
    at most max_objects are kept, drawn with `rng` (`clips.objects_on_first_frame`).
    Objects absent on a later frame have empty masks there.

    Skips yield nothing and call on_skip(reason) once per skipped unit: SKIP_SHORT_VIDEO
    once for a video shorter than clip_length, SKIP_NO_OBJECT once per window without a
    qualifying object on its first frame.
    """
    if max_objects < 1 or min_area < 0:
        raise ValueError("max_objects must be >= 1 and min_area >= 0")
    starts = window_starts(video.num_frames, clip_length, stride)
    if not starts and on_skip is not None:
        on_skip(SKIP_SHORT_VIDEO)
    window = _FrameWindow(video, image_size_max_side)
    for start in starts:
        window.drop_before(start)
        first = window.get(start)
        object_ids = choose_objects(first.areas, first.masks, max_objects, min_area, rng)
        if not object_ids:
            if on_skip is not None:
                on_skip(SKIP_NO_OBJECT)
            continue
        frames = [window.get(start + t) for t in range(clip_length)]
        yield _stack_clip(video, frames, start, object_ids)
