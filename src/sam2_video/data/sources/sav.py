"""SA-V layout (SAM2's own training data) as sources: a JPEG folder per video and
`<video>_manual.json` masklets.

Layout, as SAM2's `JSONRawDataset` / `JSONSegmentLoader` (training/dataset/) read it:

    <root>/JPEGImages_24fps/<video>/00000.jpg, 00001.jpg, ...   (or <root>/JPEGImages/)
    <root>/<video>_manual.json   (or <root>/Annotations/<video>_manual.json)

The JSON's `masklet` (or `masks`, or the JSON itself when it is a list) holds, per
annotated frame, one COCO RLE per object (None: not annotated). Annotated frame i is the
frame file numbered i * ann_every: ann_every 4 (SA-V: 24 fps frames annotated at 6 fps),
or 24 / the JSON's `fps` when it states one, as SAM2's loader computes it.

Sparse annotation, read as SAM2's loader samples it (`rm_unannotated`): a video's frames
are its *annotated* frames whose JPEG exists, in frame order; frames without annotation
(and annotated frames where some object is None) are not training frames. So a training
window of 8 frames spans 8 annotated frames (32 frames of the 24 fps video), as in SAM2's
SA-V training. Object ids are the masklet index + 1 (0 is background in a palette PNG);
an object whose RLE is empty on a frame is absent there.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from sam2_video.data.sources import VideoFiles
from sam2_video.data.sources.frames import file_safe_name
from sam2_video.data.sources.masks import decode_segmentation, segmentation_problem
from sam2_video.files import read_json

FRAME_DIRS = ("JPEGImages_24fps", "JPEGImages")
JSON_DIRS = (".", "Annotations")
JSON_SUFFIX = "_manual.json"
ANN_EVERY, FRAMES_FPS = 4, 24  # SAM2's SA-V config (ann_every: 4) and loader default


@dataclass(frozen=True)
class SavVideo(VideoFiles):
    """One SA-V video (a `Source`): its annotated frames and their masklet RLEs."""

    name: str
    source: Path  # the masklet JSON, named in error messages
    frame_paths: tuple[Path, ...]
    frame_sizes: tuple[tuple[int, int], ...]
    frame_rles: tuple[tuple[Any, ...], ...] = field(repr=False)  # per frame, per object

    def frame_size(self, index: int) -> tuple[int, int]:
        return self.frame_sizes[index]

    def frame_masks(self, index: int) -> dict[int, np.ndarray]:
        masks = {}
        for k, rle in enumerate(self.frame_rles[index]):
            try:
                mask = decode_segmentation(rle, *self.frame_sizes[index])
            except ValueError as err:
                raise ValueError(f"{self.source}: masklet object {k}: {err}") from None
            if mask.any():
                masks[k + 1] = mask
        return masks


def frame_root(root: Path) -> Path:
    """The folder of per-video JPEG folders (FRAME_DIRS, the first that exists)."""
    for name in FRAME_DIRS:
        if (root / name).is_dir():
            return root / name
    raise FileNotFoundError(
        f"{root}: no {' or '.join(FRAME_DIRS)} folder: the SA-V layout holds "
        "JPEGImages_24fps/<video>/<frame>.jpg and <video>_manual.json masklets"
    )


def json_path(root: Path, video: str) -> Path:
    """The masklet JSON of `video` (JSON_DIRS, the first where it exists)."""
    for folder in JSON_DIRS:
        path = root / folder / f"{video}{JSON_SUFFIX}"
        if path.is_file():
            return path
    raise FileNotFoundError(
        f"{root / (video + JSON_SUFFIX)}: masklet JSON of video {video!r} not found "
        f"(looked in {root} and {root / 'Annotations'})"
    )


def masklets(data: Any, path: Path) -> tuple[list[Any], int]:
    """(per annotated frame: per object RLE or None, ann_every) of a masklet JSON."""
    ann_every = ANN_EVERY
    if isinstance(data, dict):
        key = "masklet" if "masklet" in data else "masks"
        frames = data.get(key)
        fps = data.get("fps")
        if fps is not None:
            fps = int(fps[0] if isinstance(fps, list) else fps)
            if fps <= 0 or FRAMES_FPS % fps:
                raise ValueError(f"{path}: field 'fps' {fps} does not divide {FRAMES_FPS}")
            ann_every = FRAMES_FPS // fps
    else:
        frames = data
    if not isinstance(frames, list) or not all(isinstance(f, list | type(None)) for f in frames):
        raise ValueError(
            f"{path}: field 'masklet' must be a list (per annotated frame) of lists (per "
            "object) of COCO RLEs"
        )
    return frames, ann_every


def _frame_files(folder: Path) -> dict[int, Path]:
    """frame number (the stem) -> JPEG of a video folder."""
    files = {}
    for path in sorted(folder.iterdir()):
        if path.suffix.lower() in (".jpg", ".jpeg") and path.stem.isdigit():
            files[int(path.stem)] = path
    return files


def _rle_size(rles: list[Any], path: Path, where: str, frame: Path) -> tuple[int, int]:
    """(H, W) the frame's RLEs state (checked); the JPEG's when it has no object."""
    if not rles:
        with Image.open(frame) as image:
            return image.height, image.width
    sizes = {tuple(r["size"]) for r in rles if isinstance(r, dict) and "size" in r}
    if len(sizes) != 1:
        raise ValueError(f"{path}: {where}: RLEs state {len(sizes)} sizes, expected one")
    (size,) = sizes
    for k, rle in enumerate(rles):
        problem = segmentation_problem(rle, *size)
        if problem:
            raise ValueError(f"{path}: {where}[{k}]: field 'segmentation' {problem}")
    return size  # type: ignore[return-value]


def load_sav_video(root: Path, video: str) -> SavVideo:
    """One video of an SA-V root; ValueError names the JSON and the field."""
    path = json_path(root, video)
    frames, ann_every = masklets(read_json(path), path)
    files = _frame_files(frame_root(root) / video)
    kept = [
        (files[i * ann_every], rles, f"masklet[{i}]")
        for i, rles in enumerate(frames)
        if rles is not None and None not in rles and i * ann_every in files
    ]
    return SavVideo(
        name=file_safe_name(video),
        source=path,
        frame_paths=tuple(file for file, _, _ in kept),
        frame_sizes=tuple(_rle_size(r, path, where, file) for file, r, where in kept),
        frame_rles=tuple(tuple(rles) for _, rles, _ in kept),
    )


def load_sav_videos(root: Path) -> list[SavVideo]:
    """Videos of an SA-V root, sorted by name (as SAM2's JSONRawDataset lists them)."""
    root = Path(root)
    folder = frame_root(root)
    names = sorted(p.name for p in folder.iterdir() if p.is_dir())
    if not names:
        raise ValueError(f"{folder}: no video folders")
    return [load_sav_video(root, name) for name in names]
