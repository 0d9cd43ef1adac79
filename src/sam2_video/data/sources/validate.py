"""The one validator of COCO-format datasets: every problem, each with its file and field.

`check_coco_dataset` (the `sam2-video check` linter) reports all it finds, as
`file:field: severity: message` lines; the loaders (`coco_video`, `coco_images`) run the
same checks on the JSON through `raise_first_error` and stop at the first error. Errors
make the dataset unusable (the loaders refuse it); warnings point at data that loads but
probably is not what was meant (a track on one frame, a video too short for a clip, an
image without objects) or that is skipped: an annotation without a mask (a box-only one,
`"segmentation": []` with a bbox as CVAT exports boxes, or an empty one) is left out by
the loaders and reported once per file with its count and example ids.

A COCO JSON whose images carry no `video_id` is one video when it is read as video (or,
for the linter, when its annotations carry track ids): an annotation tool's export of one
video task (CVAT's "COCO 1.0": `frame_000000.PNG`, `attributes.track_id`). Its frames are
in file-name order (natural sort: frame_2 before frame_10), its video id is the JSON's stem.

Fields name the JSON entry: `images[id=3].height`, `annotations[id=12].segmentation`,
`annotations[track_id=7]` (a whole track), `images[video_id=2]` (a whole video); an entry
without a usable id is named by position (`images[4]`). The file is the JSON, or the image
file when the problem is in the image file itself (missing, unreadable, wrong size).
"""

from __future__ import annotations

import json
import re
from collections import defaultdict
from collections.abc import Iterable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

from PIL import Image
from pycocotools import mask as mask_utils

from sam2_video.data.sources import davis, sav
from sam2_video.data.sources.masks import check_compressed_counts, is_int, segmentation_problem

ERROR, WARNING = "error", "warning"
COCO_KEYS = ("images", "annotations", "categories")
ORDER_FIELDS = ("order_in_video", "frame_id", "frame_index")
TRACK_FIELDS = ("track_id", "instance_id")  # then attributes.track_id
# What a dataset is read as: video (every image needs a video id and a frame order),
# images (video ids ignored, objects are annotation instances), or None: as it looks
VIDEO, IMAGES = "video", "images"
SINGLE_VIDEO = "single_video"  # read_mode: no video ids, one video in file-name order
_READ_THREADS = 4  # image decoding releases the GIL
_EXAMPLE_IDS = 5  # ids named in a warning about many entries


@dataclass(frozen=True)
class Problem:
    """One finding; str() is the linter line `file:field: severity: message`."""

    severity: str  # ERROR or WARNING
    file: Path
    field: str
    message: str

    def __str__(self) -> str:
        return f"{self.file}:{self.field}: {self.severity}: {self.message}"


def track_id(ann: Mapping[str, Any]) -> Any:
    """An annotation's track id (TRACK_FIELDS, then attributes.track_id), else None."""
    for key in TRACK_FIELDS:
        if key in ann:
            return ann[key]
    attributes = ann.get("attributes")
    return attributes.get("track_id") if isinstance(attributes, dict) else None


def has_mask(ann: Any) -> bool:
    """False for an annotation the loaders skip: no segmentation, or an empty one (`[]`,
    `[[]]`: a box-only annotation as CVAT exports boxes)."""
    segm = ann.get("segmentation") if isinstance(ann, dict) else None
    if isinstance(segm, list):
        return any(not isinstance(poly, list) or poly for poly in segm)
    return segm is not None


def natural_key(name: str) -> tuple[tuple[int, int | str], ...]:
    """Sort key of a file name with its digit runs compared as numbers (frame_2 < frame_10)."""
    return tuple((0, int(part)) if part.isdigit() else (1, part) for part in _DIGITS.split(name))


_DIGITS = re.compile(r"(\d+)")


def single_video_order(images: list[Any]) -> dict[int, int]:
    """image id -> frame index of a one-video JSON (no video ids): natural file-name order."""
    named = [
        i
        for i in images
        if isinstance(i, dict) and is_int(i.get("id")) and isinstance(i.get("file_name"), str)
    ]
    ordered = sorted(named, key=lambda image: (natural_key(image["file_name"]), image["id"]))
    return {image["id"]: index for index, image in enumerate(ordered)}


def read_mode(data: dict[str, Any], read_as: str | None) -> str:
    """How a COCO JSON is read: IMAGES, VIDEO (images carry video ids) or SINGLE_VIDEO."""
    if read_as == IMAGES:
        return IMAGES
    if any(isinstance(i, dict) and "video_id" in i for i in data["images"]):
        return VIDEO
    if read_as == VIDEO or any(track_id(a) is not None for a in data["annotations"] if has_mask(a)):
        return SINGLE_VIDEO
    return IMAGES


class _Findings(list[Problem]):
    """Problems in the order found; `file` defaults to the file being checked, `path`."""

    def __init__(self, path: Path) -> None:
        super().__init__()
        self.path = path

    def error(self, field: str, message: str, file: Path | None = None) -> None:
        self.append(Problem(ERROR, file or self.path, field, message))

    def warning(self, field: str, message: str, file: Path | None = None) -> None:
        self.append(Problem(WARNING, file or self.path, field, message))


@dataclass(frozen=True)
class _ImageEntry:
    """The usable parts of one `images` entry (None where the entry is broken)."""

    id: int
    file_name: str | None
    height: int | None
    width: int | None
    video_id: int | str | None
    order: int | None

    @property
    def where(self) -> str:
        return f"images[id={self.id}]"


# ---------------------------------------------------------------------------- top level


def _load_coco(found: _Findings) -> dict[str, Any] | None:
    try:
        data = json.loads(found.path.read_text(encoding="utf-8"))
    except (FileNotFoundError, IsADirectoryError):
        found.error("(file)", "annotation file not found: check the path")
    except UnicodeDecodeError:
        found.error("(file)", "not UTF-8 text, so not a COCO JSON")
    except json.JSONDecodeError as err:
        found.error(f"line {err.lineno}", f"not valid JSON: {err.msg} (column {err.colno})")
    else:
        return data if _coco_lists(data, found) else None
    return None


def _coco_lists(data: Any, found: _Findings) -> bool:
    """Whether `data` is an object with the COCO top-level lists (else reported)."""
    keys = ", ".join(COCO_KEYS)
    if not isinstance(data, dict):
        found.error(
            "(top level)",
            f"not a COCO JSON: the top level is a {type(data).__name__}, expected an object "
            f"with {keys}",
        )
        return False
    for key in COCO_KEYS:
        if not isinstance(data.get(key), list):
            found.error(
                key,
                f"not a COCO JSON: this top-level list is missing (a COCO JSON has {keys}, "
                "each a list)",
            )
    return all(isinstance(data.get(key), list) for key in COCO_KEYS)


def _lint_categories(categories: list[Any], found: _Findings) -> set[int]:
    ids: set[int] = set()
    for index, cat in enumerate(categories):
        if not isinstance(cat, dict) or not is_int(cat.get("id")):
            found.error(f"categories[{index}].id", "missing or not an int")
        elif cat["id"] in ids:
            found.error(f"categories[id={cat['id']}].id", "duplicate category id")
        else:
            ids.add(cat["id"])
    return ids


# ---------------------------------------------------------------------------- images


def _file_name_problem(name: Any) -> str | None:
    if not isinstance(name, str) or not name:
        return "missing or not a string: give the image path relative to the image dir"
    parts = PurePosixPath(name.replace("\\", "/")).parts
    if PurePosixPath(name).is_absolute() or ".." in parts:
        return f"{name!r} must be a path relative to the image dir (no leading '/', no '..')"
    return None


def _image_order(image: Mapping[str, Any], where: str, found: _Findings) -> int | None:
    for key in ORDER_FIELDS:
        if key in image:
            if is_int(image[key]):
                return image[key]
            found.error(f"{where}.{key}", f"is {image[key]!r}, expected an int")
            return None
    found.error(
        f"{where}.{ORDER_FIELDS[0]}",
        f"no frame order in a video dataset: add one of {', '.join(ORDER_FIELDS)}",
    )
    return None


def _image_entry(
    image: dict[str, Any], found: _Findings, mode: str, single: dict[int, int]
) -> _ImageEntry:
    where = f"images[id={image['id']}]"
    name_problem = _file_name_problem(image.get("file_name"))
    if name_problem:
        found.error(f"{where}.file_name", name_problem)
    dims = {}
    for key in ("height", "width"):
        dims[key] = image.get(key) if is_int(image.get(key)) and image[key] > 0 else None
        if dims[key] is None:
            found.error(f"{where}.{key}", "missing or not a positive int")
    video_id, order = (image.get("video_id") if mode == VIDEO else None), None
    if mode == SINGLE_VIDEO:
        video_id, order = found.path.stem, single.get(image["id"])
    elif mode == VIDEO and not isinstance(video_id, int | str):
        found.error(
            f"{where}.video_id",
            "missing or not an int/string: a video dataset gives every frame its video_id "
            "(images without video ids are static images: use the coco_images source)",
        )
        video_id = None
    elif mode == VIDEO:
        order = _image_order(image, where, found)
    file_name = None if name_problem else image["file_name"]
    return _ImageEntry(image["id"], file_name, dims["height"], dims["width"], video_id, order)


def _lint_images(images: list[Any], found: _Findings, mode: str) -> dict[int, _ImageEntry]:
    """image id -> entry; broken entries are reported, duplicates after the first dropped."""
    single = single_video_order(images) if mode == SINGLE_VIDEO else {}
    entries: dict[int, _ImageEntry] = {}
    for index, image in enumerate(images):
        if not isinstance(image, dict) or not is_int(image.get("id")):
            found.error(f"images[{index}].id", "entry is not an object with an int 'id'")
        elif image["id"] in entries:
            found.error(
                f"images[id={image['id']}].id",
                f"duplicate image id (again at images[{index}]): give every image its own id",
            )
        else:
            entries[image["id"]] = _image_entry(image, found, mode, single)
    return entries


# ---------------------------------------------------------------------------- annotations


@dataclass(frozen=True)
class _Instance:
    image_id: int
    object_id: int | None  # track id, else category id; None when unusable
    area: int | None  # pixels; None when the segmentation is broken


def _segmentation_area(segm: Any, height: int, width: int) -> int:
    """Pixel count of a structurally valid segmentation (RLE area needs no decode)."""
    if isinstance(segm, list):
        return int(mask_utils.area(mask_utils.merge(mask_utils.frPyObjects(segm, height, width))))
    if isinstance(segm["counts"], list):
        return int(mask_utils.area(mask_utils.frPyObjects(dict(segm), height, width)))
    counts = segm["counts"].encode("ascii") if isinstance(segm["counts"], str) else segm["counts"]
    return int(mask_utils.area({"size": [height, width], "counts": counts}))


def _lint_segmentation(
    ann: dict[str, Any], image: _ImageEntry, where: str, found: _Findings
) -> int | None:
    """The annotation's area, or None (reported) when its segmentation is unusable."""
    if image.height is None or image.width is None:
        return None  # the image entry is already reported
    segm = ann.get("segmentation")
    problem = segmentation_problem(segm, image.height, image.width)
    if problem is None and isinstance(segm, dict) and isinstance(segm["counts"], str | bytes):
        try:
            check_compressed_counts(segm["counts"], image.height, image.width)
        except ValueError as err:
            problem = str(err).removeprefix("field 'segmentation': ")
    if problem:
        found.error(f"{where}.segmentation", problem)
        return None
    return _segmentation_area(segm, image.height, image.width)


def _annotation_object(
    ann: dict[str, Any], use_tracks: bool, where: str, found: _Findings
) -> int | None:
    if not use_tracks:
        return ann.get("category_id") if is_int(ann.get("category_id")) else None
    track = track_id(ann)
    if not is_int(track):
        state = "missing" if track is None else f"is {track!r}"
        found.error(
            f"{where}.track_id",
            f"{state}, while other annotations carry integer track ids (track_id/instance_id/"
            "attributes.track_id): give every annotation one, or none to use categories",
        )
        return None
    return track


def _lint_annotation_fields(
    ann: dict[str, Any], where: str, images: Mapping[int, _ImageEntry], cats: set[int], found
) -> bool:
    """Report bad ids / iscrowd; False when the annotation's image is unknown."""
    if ann.get("category_id") not in cats:
        found.error(
            f"{where}.category_id",
            f"{ann.get('category_id')!r} is not a category id in 'categories'",
        )
    if ann.get("iscrowd", 0) not in (0, 1):
        found.error(f"{where}.iscrowd", f"is {ann['iscrowd']!r}, expected 0 or 1")
    if ann.get("image_id") not in images:
        found.error(
            f"{where}.image_id",
            f"{ann.get('image_id')!r} is not an image id in 'images': the annotation belongs to "
            "no image",
        )
        return False
    return True


def _lint_annotation_id(ann: dict[str, Any], where: str, seen_ids: set, read_as, found) -> None:
    if not is_int(ann.get("id")):
        report = found.error if read_as == IMAGES else found.warning
        report(
            f"{where}.id",
            "missing or not an int: COCO gives every annotation a unique int id (the "
            "static-image source needs it)",
        )
    elif ann["id"] in seen_ids:
        found.error(f"{where}.id", "duplicate annotation id")
    seen_ids.add(ann.get("id"))


def _lint_annotations(
    annotations: list[Any],
    images: Mapping[int, _ImageEntry],
    cats: set[int],
    found: _Findings,
    read_as: str | None,
) -> tuple[list[_Instance], bool]:
    """Every annotation checked; the usable ones as instances, and whether objects are tracks."""
    use_tracks = read_as != IMAGES and any(
        track_id(a) is not None for a in annotations if has_mask(a)
    )
    instances: list[_Instance] = []
    seen_ids: set[int] = set()
    maskless: list[str] = []
    for index, ann in enumerate(annotations):
        if not isinstance(ann, dict):
            found.error(f"annotations[{index}]", "entry is not an object")
            continue
        where = f"annotations[id={ann['id']}]" if is_int(ann.get("id")) else f"annotations[{index}]"
        _lint_annotation_id(ann, where, seen_ids, read_as, found)
        if not _lint_annotation_fields(ann, where, images, cats, found):
            continue
        if not has_mask(ann):
            maskless.append(where.removeprefix("annotations"))
            continue
        area = _lint_segmentation(ann, images[ann["image_id"]], where, found)
        object_id = _annotation_object(ann, use_tracks, where, found)
        instances.append(_Instance(ann["image_id"], object_id, area))
    if maskless:
        found.warning("annotations", skipped_message(maskless))
    return instances, use_tracks


def skipped_message(where: list[str]) -> str:
    """The warning about annotations without a mask, their count and a few examples."""
    more = f", ... ({len(where) - _EXAMPLE_IDS} more)" if len(where) > _EXAMPLE_IDS else ""
    return (
        f"{len(where)} annotation(s) without a mask (box-only, or an empty or missing "
        f"'segmentation') are skipped: {', '.join(where[:_EXAMPLE_IDS])}{more}"
    )


# ---------------------------------------------------------------------------- videos, objects


def _lint_video_frames(video_id: Any, frames: list[_ImageEntry], found: _Findings) -> None:
    first_with: dict[int, int] = {}
    for entry in frames:
        if entry.order is None:
            continue
        if entry.order in first_with:
            found.error(
                f"{entry.where}.{ORDER_FIELDS[0]}",
                f"frame order {entry.order} appears twice in video {video_id!r} (also image "
                f"id={first_with[entry.order]}): give each frame a distinct order",
            )
        else:
            first_with[entry.order] = entry.id


def _lint_tracks(
    video_id: Any, frames: list[_ImageEntry], by_image: Mapping[int, list[_Instance]], found
) -> None:
    """Warn about tracks whose masks are all empty or that are on a single frame."""
    track_frames: dict[int, set[int]] = defaultdict(set)
    for entry in frames:
        for inst in by_image.get(entry.id, ()):
            if inst.object_id is None or inst.area is None:
                continue  # already reported
            frames_of = track_frames[inst.object_id]  # an all-empty track gets an entry too
            if inst.area > 0:
                frames_of.add(entry.id)
    for track, image_ids in sorted(track_frames.items()):
        where, track_of = f"annotations[track_id={track}]", f"track {track} of video {video_id!r}"
        if not image_ids:
            found.warning(
                where,
                f"{track_of} is empty: all its masks have zero area; drop it or fix its masks",
            )
        elif len(image_ids) == 1:
            found.warning(
                where,
                f"{track_of} is on a single frame (image id={min(image_ids)}): nothing to track; "
                "check its track_id",
            )


def _has_object(image_id: int, by_image: Mapping[int, list[_Instance]]) -> bool:
    return any(inst.area for inst in by_image.get(image_id, ()))


def _lint_videos(
    entries: Iterable[_ImageEntry],
    by_image: Mapping[int, list[_Instance]],
    use_tracks: bool,
    clip_length: int | None,
    found: _Findings,
) -> None:
    videos: dict[Any, list[_ImageEntry]] = defaultdict(list)
    for entry in entries:
        if entry.video_id is not None:
            videos[entry.video_id].append(entry)
    for video_id, frames in videos.items():
        _lint_video_frames(video_id, frames, found)
        where = f"images[video_id={video_id}]"
        if clip_length is not None and len(frames) < clip_length:
            found.warning(
                where,
                f"video has {len(frames)} frame(s), fewer than clip_length {clip_length}: it "
                "yields no clips",
            )
        if not any(_has_object(entry.id, by_image) for entry in frames):
            found.warning(
                where, "no frame of this video has an object (non-empty mask): it yields no clips"
            )
        if use_tracks:
            _lint_tracks(video_id, frames, by_image, found)


# ---------------------------------------------------------------------------- image files


def _image_file_problem(entry: _ImageEntry, path: Path) -> tuple[str, str] | None:
    """(field, message) when the file is missing, unreadable or not the JSON's size."""
    if not path.is_file():
        return "file_name", "image file not found: check the image dir and file_name"
    try:
        with Image.open(path) as image:
            image.load()  # decodes every byte: finds truncated files
            height, width = image.height, image.width
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as err:
        return "file_name", (
            f"cannot read image ({err}): the file is truncated or not an "
            "image; re-download or re-export it"
        )
    expected = (entry.height, entry.width)
    if None not in expected and (height, width) != expected:
        return "height/width", (
            f"image is {height}x{width} (HxW) but the JSON says {entry.height}x{entry.width}: "
            "fix height/width (annotations refer to the stored pixels; EXIF orientation is "
            "not applied)"
        )
    return None


def _lint_image_files(entries: Iterable[_ImageEntry], image_dir: Path, found: _Findings) -> None:
    if not image_dir.is_dir():
        found.error(
            "(image dir)",
            "image dir not found: pass the folder that the images' file_name paths are relative to",
            image_dir,
        )
        return
    named = [entry for entry in entries if entry.file_name is not None]
    paths = [image_dir / entry.file_name for entry in named]  # type: ignore[operator]
    with ThreadPoolExecutor(_READ_THREADS) as pool:
        results = pool.map(_image_file_problem, named, paths)
        for entry, file, result in zip(named, paths, results, strict=True):
            if result is not None:
                found.error(f"{entry.where}.{result[0]}", result[1], file)


# ---------------------------------------------------------------------------- entry point


def _lint_json(
    data: dict[str, Any], read_as: str | None, clip_length: int | None, found: _Findings
) -> dict[int, _ImageEntry]:
    """Report every JSON problem (categories, images, annotations, then per video / per
    image); the usable image entries."""
    cats = _lint_categories(data["categories"], found)
    entries = _lint_images(data["images"], found, read_mode(data, read_as))
    instances, use_tracks = _lint_annotations(data["annotations"], entries, cats, found, read_as)
    by_image: dict[int, list[_Instance]] = defaultdict(list)
    for inst in instances:
        by_image[inst.image_id].append(inst)
    if any(entry.video_id is not None for entry in entries.values()):
        _lint_videos(entries.values(), by_image, use_tracks, clip_length, found)
    else:
        for entry in entries.values():
            if not _has_object(entry.id, by_image):
                found.warning(
                    entry.where,
                    "image has no object (no annotation with a non-empty mask): it yields no clip",
                )
    return entries


def raise_first_error(data: Any, path: Path, read_as: str) -> list[Problem]:
    """What a loader runs: ValueError with the first error line of the checks above;
    without errors, the warnings (what the loader skips, what yields no clip)."""
    found = _Findings(path)
    if _coco_lists(data, found):
        _lint_json(data, read_as, None, found)
    for problem in found:
        if problem.severity == ERROR:
            raise ValueError(str(problem))
    return list(found)


def check_coco_dataset(
    ann_path: Path, image_dir: Path, *, clip_length: int | None = None, read_images: bool = True
) -> list[Problem]:
    """Every problem of a COCO-format dataset (video or static images), in a stable order.

    JSON problems first (_lint_json), then image files (read in full, so truncated
    files are found; read_images=False skips them). clip_length: warn about videos with
    fewer frames. Never raises for bad data.
    """
    found = _Findings(Path(ann_path))
    data = _load_coco(found)
    if data is None:
        return list(found)
    entries = _lint_json(data, None, clip_length, found)
    if read_images:
        _lint_image_files(entries.values(), Path(image_dir), found)
    return list(found)


def summary(problems: Iterable[Problem]) -> str:
    """The linter's last line, e.g. '2 errors, 1 warning'."""
    problems = list(problems)
    errors = sum(p.severity == ERROR for p in problems)
    warnings = len(problems) - errors
    if not problems:
        return "no problems found"
    return f"{errors} error{'s' * (errors != 1)}, {warnings} warning{'s' * (warnings != 1)}"


# ---------------------------------------------------------------------------- folder layouts


def _loader_error(err: Exception, fallback: Path, field: str) -> Problem:
    """A loader's ValueError / OSError ("<file>: <message>") as a Problem."""
    text = str(err)
    file, sep, message = text.partition(": ")
    if not sep or not Path(file).exists():
        file, message = str(fallback), text
    return Problem(ERROR, Path(file), field, message)


def _lint_folder_video(video: Any, where: str, clip_length: int | None, found: _Findings):
    """Decode every frame's masks (errors reported); warn about short / empty videos."""
    source = getattr(video, "source", video.frame_path(0) if video.num_frames else None)
    if clip_length is not None and video.num_frames < clip_length:
        found.warning(
            where,
            f"video has {video.num_frames} (annotated) frame(s), fewer than clip_length "
            f"{clip_length}: it yields no clips",
            source,
        )
    has_object = False
    for index in range(video.num_frames):
        try:
            has_object = bool(video.frame_masks(index)) or has_object
        except ValueError as err:
            found.append(_loader_error(err, source, f"{where}.frame[{index}]"))
            return
    if video.num_frames and not has_object:
        found.warning(where, "no frame of this video has an object: it yields no clips", source)


def is_sav_layout(root: Path) -> bool:
    """Whether a folder holds SA-V masklet JSONs (`*_manual.json`) rather than DAVIS PNGs."""
    return any(root.glob("*_manual.json")) or any((root / "Annotations").glob("*_manual.json"))


def check_folder_dataset(root: Path, *, clip_length: int | None = None) -> list[Problem]:
    """Every problem of an SA-V or DAVIS folder dataset (each video loaded, each frame's
    masks decoded), as check_coco_dataset reports them. Never raises for bad data."""
    root = Path(root)
    layout = "sav" if is_sav_layout(root) else "davis"
    try:
        frames = sav.frame_root(root) if layout == "sav" else root / "JPEGImages"
        names = sorted(p.name for p in frames.iterdir() if p.is_dir())
    except OSError as err:
        return [Problem(ERROR, root, "(folder)", f"{layout} layout: {err}")]
    found = _Findings(frames)
    for name in names:
        where = f"(video {name})"
        try:
            if layout == "sav":
                video = sav.load_sav_video(root, name)
            else:
                (video,) = davis.load_davis_videos(root, names=[name])
        except (ValueError, OSError) as err:
            found.append(_loader_error(err, frames / name, where))
            continue
        _lint_folder_video(video, where, clip_length, found)
    if not names:
        found.error("(folder)", "no video folders")
    return list(found)
