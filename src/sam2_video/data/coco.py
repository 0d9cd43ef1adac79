"""COCO-format *video* datasets: JSON -> videos -> sliding-window clips.

A video dataset is a COCO JSON whose `images[*]` carry `video_id` and a frame order
(`order_in_video`, else `frame_id`, else `frame_index`). Annotations carry compressed RLE
(`counts` str), uncompressed RLE (`counts` list) or polygons (list of coordinate lists).

Objects are tracks when the file has track ids (`track_id`, `instance_id` or
`attributes.track_id`), else categories (one union mask per category per frame, as the
seed project did). Several annotations of one object on one frame are merged (union);
`iscrowd` annotations are kept as part of their object.

Segmentations are parsed, measured and resized as run lengths by `rle` (a frame's masks
are never decoded at source resolution); this module reads the JSON and assembles clips.

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

from sam2_video.data.clips import Clip, objects_on_first_frame, window_clip, window_starts
from sam2_video.data.rle import (
    bulk_segmentation_runs,
    is_int,
    resize_runs,
    runs_area,
    segmentation_problem,
    segmentation_runs,
    union_area,
)
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


# ---------------------------------------------------------------------------- JSON -> videos


def describe_annotation(ann: Any, index: int) -> str:
    """How error messages name an annotation: by its id, else by its list index."""
    if isinstance(ann, dict) and "id" in ann:
        return f"annotation id={ann['id']}"
    return f"annotations[{index}] (no 'id')"


def require_coco(data: Any, path: Path) -> None:
    """Raise ValueError unless `data` (loaded from `path`) has the COCO top-level lists."""
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
            if not is_int(image[key]):
                raise ValueError(f"{path}: image id={image['id']}: field '{key}' must be an int")
            return image[key]
    raise ValueError(
        f"{path}: image id={image['id']}: no frame order: add one of {', '.join(ORDER_FIELDS)}"
    )


def check_image_fields(image: Any, index: int, path: Path) -> str:
    """Checks shared by every COCO image entry (id, file_name, size); returns 'where' text."""
    if not isinstance(image, dict) or not is_int(image.get("id")):
        raise ValueError(f"{path}: images[{index}]: field 'id' missing or not an int")
    where = f"{path}: image id={image['id']}"
    name = image.get("file_name")
    if not isinstance(name, str) or not name:
        raise ValueError(f"{where}: field 'file_name' missing or not a string")
    parts = PurePosixPath(name.replace("\\", "/")).parts
    if PurePosixPath(name).is_absolute() or ".." in parts:
        raise ValueError(f"{where}: field 'file_name' {name!r} must be relative to the image dir")
    for key in ("height", "width"):
        if not is_int(image.get(key)) or image[key] < 1:
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


def category_ids(categories: list[Any], path: Path) -> set[int]:
    """Ids of a COCO JSON's `categories` (each checked to be an int)."""
    ids = set()
    for index, cat in enumerate(categories):
        if not isinstance(cat, dict) or not is_int(cat.get("id")):
            raise ValueError(f"{path}: categories[{index}]: field 'id' missing or not an int")
        ids.add(cat["id"])
    return ids


def track_id(ann: Mapping[str, Any]) -> Any:
    """An annotation's track id (TRACK_FIELDS, then attributes.track_id), else None."""
    for key in TRACK_FIELDS:
        if key in ann:
            return ann[key]
    attributes = ann.get("attributes")
    return attributes.get("track_id") if isinstance(attributes, dict) else None


def check_annotation(ann: Any, images: Mapping[int, Any], cats: set[int]) -> str:
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
    use_tracks = any(isinstance(a, dict) and track_id(a) is not None for a in annotations)
    seen_ids: set[Any] = set()
    by_image: dict[int, list[ObjectAnnotation]] = {}
    for index, ann in enumerate(annotations):
        problem = check_annotation(ann, images, cats)
        where = f"{path}: {describe_annotation(ann, index)}"
        if problem:
            raise ValueError(f"{where}: {problem}")
        if "id" in ann and ann["id"] in seen_ids:
            raise ValueError(f"{where}: duplicate annotation id")
        seen_ids.add(ann.get("id"))
        object_id = track_id(ann) if use_tracks else ann["category_id"]
        if not is_int(object_id):
            raise ValueError(
                f"{where}: field 'track_id' is {object_id!r}: other annotations of this file "
                "carry integer track ids (track_id/instance_id/attributes.track_id); give every "
                "annotation one, or none to use categories as objects"
            )
        by_image.setdefault(ann["image_id"], []).append((object_id, ann))
    return by_image


def video_name(video_id: int | str) -> str:
    """A file-safe clip name for a video id (other characters become '_')."""
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
        name=video_name(video_id),
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
    require_coco(data, ann_path)
    images = _index_images(data["images"], ann_path)
    categories = category_ids(data["categories"], ann_path)
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
    runs: dict[int, list[np.ndarray]]  # object id -> RLE runs of its annotations

    def areas(self) -> dict[int, int]:
        """object id -> pixel count at source resolution (the union of its annotations);
        measured only for the frames that start a window."""
        return {
            object_id: union_area(runs) if len(runs) > 1 else runs_area(runs[0])
            for object_id, runs in self.runs.items()
        }


# Frames whose masks are parsed and resized in one bulk pass: at most _CHUNK_FRAMES, and
# few enough that one object's resized masks stay within _CHUNK_PIXELS (bounded memory).
_CHUNK_FRAMES = 32
_CHUNK_PIXELS = 1 << 22

# Per annotation of a frame: (its runs, its resized (h, w) mask), or None where only the
# one-by-one path can tell (bad input raises there, in frame order).
_FrameMasks = list[tuple[np.ndarray, np.ndarray] | None]


def _chunk_length(video: CocoVideo, max_side: int | None) -> int:
    height, width = target_size(*video.frame_sizes[0], max_side)
    return max(1, min(_CHUNK_FRAMES, _CHUNK_PIXELS // (height * width)))


def _chunk_masks(video: CocoVideo, frames: range, max_side: int | None) -> list[_FrameMasks]:
    """_FrameMasks of each of `frames`, parsed and resized in bulk."""
    owners = [(i, k) for i in frames for k in range(len(video.frame_objects[i]))]
    segms = [video.frame_objects[i][k][1].get("segmentation") for i, k in owners]
    all_runs = bulk_segmentation_runs(segms, [video.frame_sizes[i] for i, _ in owners])
    same_size: dict[tuple[int, int], list[int]] = {}  # source (H, W) -> annotations
    for j, (i, _) in enumerate(owners):
        if all_runs[j] is not None:
            same_size.setdefault(video.frame_sizes[i], []).append(j)
    found: dict[tuple[int, int], tuple[np.ndarray, np.ndarray]] = {}
    for source, rows in same_size.items():
        size = target_size(*source, max_side)
        resized = resize_runs([all_runs[j] for j in rows], source, size)  # (N, h, w)
        found |= {owners[j]: (all_runs[j], mask) for j, mask in zip(rows, resized, strict=True)}
    return [[found.get((i, k)) for k in range(len(video.frame_objects[i]))] for i in frames]


def _one_mask(
    video: CocoVideo, index: int, ann: Mapping[str, Any], size: tuple[int, int]
) -> tuple[np.ndarray, np.ndarray]:
    """(runs, resized mask) of an annotation the bulk pass left out; bad input raises."""
    source = video.frame_sizes[index]
    try:
        runs = segmentation_runs(ann["segmentation"], *source)
    except ValueError as err:
        raise ValueError(f"{video.source}: annotation id={ann.get('id')}: {err}") from None
    return runs, resize_runs([runs], source, size)[0]


def _frame_masks(
    video: CocoVideo, index: int, size: tuple[int, int], found: _FrameMasks
) -> tuple[dict[int, np.ndarray], dict[int, list[np.ndarray]]]:
    """object id -> (h, w) bool resized union mask of frame `index`, and -> the runs of its
    annotations; masks are resized straight from their runs, never decoded whole."""
    masks: dict[int, np.ndarray] = {}
    runs: dict[int, list[np.ndarray]] = {}
    for (object_id, ann), item in zip(video.frame_objects[index], found, strict=True):
        object_runs, mask = item or _one_mask(video, index, ann, size)
        if object_id in masks:  # the object's annotations are merged (union)
            mask = masks[object_id] | mask
            runs[object_id].append(object_runs)
        else:
            runs[object_id] = [object_runs]
        masks[object_id] = mask
    return masks, runs


def _load_frame(
    video: CocoVideo, index: int, max_side: int | None, found: _FrameMasks
) -> _LoadedFrame:
    source_size = video.frame_sizes[index]
    size = target_size(*source_size, max_side)
    rgb = read_rgb(video.frame_paths[index], source_size)
    masks, runs = _frame_masks(video, index, size, found)
    return _LoadedFrame(rgb=resize_frame(rgb, size), masks=masks, runs=runs)


class _FrameWindow:
    """Loaded frames of the current window: overlapping windows decode each frame once.

    The frames of a chunk are kept in one (n, h, w, 3) buffer, so that a clip of
    consecutive frames is a (read-only) view of it instead of a copy.
    """

    def __init__(self, video: CocoVideo, max_side: int | None) -> None:
        self.video, self.max_side = video, max_side
        self.frames: dict[int, _LoadedFrame] = {}
        self.chunk_length = _chunk_length(video, max_side) if video.num_frames else 1
        self.chunks: dict[int, list[_FrameMasks]] = {}  # first frame of a chunk -> masks
        self.rgb: dict[int, np.ndarray] = {}  # first frame of a chunk -> its frame buffer

    def _chunk(self, index: int) -> tuple[int, range]:
        first = index - index % self.chunk_length
        return first, range(first, min(first + self.chunk_length, self.video.num_frames))

    def get(self, index: int) -> _LoadedFrame:
        if index not in self.frames:
            first, frames = self._chunk(index)
            if first not in self.chunks:
                self.chunks[first] = _chunk_masks(self.video, frames, self.max_side)
            found = self.chunks[first][index - first]
            frame = _load_frame(self.video, index, self.max_side, found)
            self.frames[index] = self._buffered(frame, first, len(frames), index)
        return self.frames[index]

    def _buffered(self, frame: _LoadedFrame, first: int, length: int, index: int) -> _LoadedFrame:
        if first not in self.rgb:
            self.rgb[first] = np.empty((length, *frame.rgb.shape), dtype=np.uint8)
        buffer = self.rgb[first]
        if buffer.shape[1:] != frame.rgb.shape:
            return frame  # another size than its chunk's first frame: _stack_clip reports it
        buffer[index - first] = frame.rgb
        return _LoadedFrame(buffer[index - first], frame.masks, frame.runs)

    def clip_rgb(self, start: int, length: int) -> np.ndarray | None:
        """(T, h, w, 3) frames [start, start + length) as a read-only view of their chunk's
        buffer; None when they are not all in one buffer (then they are stacked)."""
        first, frames = self._chunk(start)
        buffer = self.rgb.get(first)
        indices = range(start, start + length)
        if buffer is None or indices[-1] not in frames:
            return None
        if any(self.frames[i].rgb.base is not buffer for i in indices):
            return None
        view = buffer[start - first : start - first + length]
        view.flags.writeable = False  # shared with overlapping clips
        return view

    def drop_before(self, index: int) -> None:
        for old in [i for i in self.frames if i < index]:
            del self.frames[old]
        for old in [c for c in self.chunks if c + self.chunk_length <= index]:
            del self.chunks[old]
            self.rgb.pop(old, None)


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
    video: CocoVideo,
    frames: list[_LoadedFrame],
    start: int,
    object_ids: list[int],
    rgb: np.ndarray | None,
) -> Clip:
    """The clip of `frames`; rgb: their (T, h, w, 3) pixels if already in one array."""
    shape = frames[0].rgb.shape
    for offset, frame in enumerate(frames):
        if frame.rgb.shape != shape:
            raise ValueError(
                f"{video.frame_paths[start + offset]}: frame size {frame.rgb.shape[:2]} differs "
                f"from {shape[:2]} of {video.frame_paths[start]} in video {video.name!r}: "
                "frames of a video must share one size"
            )
    rgb = np.stack([f.rgb for f in frames]) if rgb is None else rgb  # (T, h, w, 3)
    return window_clip(video.name, start, rgb, [f.masks for f in frames], object_ids)


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
        object_ids = choose_objects(first.areas(), first.masks, max_objects, min_area, rng)
        if not object_ids:
            if on_skip is not None:
                on_skip(SKIP_NO_OBJECT)
            continue
        frames = [window.get(start + t) for t in range(clip_length)]
        yield _stack_clip(video, frames, start, object_ids, window.clip_rgb(start, clip_length))
