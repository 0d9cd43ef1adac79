"""DAVIS-format folders in and out: frames as JPEG, per-frame object masks as palette PNG.

Layout written by `write_davis_clip` (the DAVIS-2017 one, without the resolution level):

    <root>/JPEGImages/<clip>/00000.jpg, 00001.jpg, ...
    <root>/Annotations/<clip>/00000.png, 00001.png, ...

Each annotation is a palette ("P" mode) PNG whose pixel values are object indices:
0 is background, 1..254 objects, 255 "void" (read as background, as davis2017-evaluation
does). Colours are the standard DAVIS / PASCAL VOC palette, so files open in DAVIS tools.
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from PIL import Image

from sam2_video.files import atomic_path

VOID_INDEX = 255
MAX_OBJECTS = 254  # indices 1..254; 255 is void
JPEG_QUALITY = 95
FRAME_NAME_FORMAT = "{:05d}"
FRAME_SUFFIXES = (".jpg", ".jpeg")


@functools.cache
def davis_palette() -> tuple[int, ...]:
    """The 256-colour DAVIS (PASCAL VOC) palette as a flat (r, g, b, r, g, b, ...) tuple
    (built once: every predicted PNG carries it)."""
    palette = []
    for index in range(256):
        rgb = [0, 0, 0]
        label = index
        for shift in range(7, -1, -1):
            for channel in range(3):
                rgb[channel] |= ((label >> channel) & 1) << shift
            label >>= 3
        palette.extend(rgb)
    return tuple(palette)


def write_palette_png(path: Path | str, index_map: np.ndarray) -> None:
    """Write an (H, W) uint8 map of palette indices as a DAVIS palette PNG (atomically)."""
    index_map = np.asarray(index_map)
    if index_map.ndim != 2 or index_map.dtype != np.uint8:
        raise ValueError(
            f"{path}: index map must be (H, W) uint8, got {index_map.shape} {index_map.dtype}"
        )
    image = Image.fromarray(index_map)  # mode "L"; putpalette turns it into mode "P"
    image.putpalette(davis_palette())
    with atomic_path(path) as tmp:
        image.save(tmp, format="PNG")


def masks_to_index_map(masks: np.ndarray) -> np.ndarray:
    """(O, H, W) bool -> (H, W) uint8 with object k at index k + 1.

    Where objects overlap, the later object wins (a palette PNG holds one index a pixel).
    """
    if masks.shape[0] > MAX_OBJECTS:
        raise ValueError(
            f"{masks.shape[0]} objects do not fit a palette PNG (at most {MAX_OBJECTS})"
        )
    index_map = np.zeros(masks.shape[1:], dtype=np.uint8)  # (H, W)
    for k, mask in enumerate(masks):
        index_map[mask] = k + 1
    return index_map


def _check_clip_arrays(
    clip_name: str,
    frames: np.ndarray,
    masks: np.ndarray,
    object_ids: Sequence[int],
    frame_files: Sequence[tuple[bytes, str]] | None,
) -> None:
    if frames.ndim != 4 or frames.shape[-1] != 3 or frames.dtype != np.uint8:
        raise ValueError(f"clip {clip_name}: frames must be (T, H, W, 3) uint8, got {frames.shape}")
    expected = (frames.shape[0], len(object_ids), *frames.shape[1:3])
    if masks.dtype != np.bool_ or masks.shape != expected:
        raise ValueError(
            f"clip {clip_name}: masks must be (T, O, H, W) = {expected} bool, "
            f"got {masks.shape} {masks.dtype}"
        )
    if len(object_ids) > MAX_OBJECTS:
        raise ValueError(
            f"clip {clip_name}: {len(object_ids)} objects, a palette PNG holds {MAX_OBJECTS}"
        )
    if frame_files is not None and len(frame_files) != frames.shape[0]:
        raise ValueError(f"clip {clip_name}: {len(frame_files)} frame files for {len(frames)}")


def write_davis_clip(
    root: Path | str,
    clip_name: str,
    frames: np.ndarray,
    masks: np.ndarray,
    object_ids: Sequence[int],
    frame_files: Sequence[tuple[bytes, str]] | None = None,
) -> None:
    """Write one clip as DAVIS folders under `root` (see the module docstring for the layout).

    frame_files: the frames' stored files (bytes, suffix), whose decoding `frames` is: a
    JPEG is written as it is (SAM2's video loader then sees exactly `frames`); anything
    else (PNG: SAM2's loader reads only .jpg/.jpeg) is encoded from `frames` at
    JPEG_QUALITY, as are all frames without frame_files.

    frames: (T, H, W, 3) uint8 RGB; masks: (T, O, H, W) bool. The k-th object of
    `object_ids` gets palette index k + 1 (ids themselves are not stored; keep them beside
    if needed). Overlapping objects: the later one wins. Each of the clip's two folders is
    written to a temp path and renamed, so a failed write leaves no partial clip folder and
    an existing clip of that name is replaced.
    """
    if not clip_name or Path(clip_name).name != clip_name or clip_name.startswith("."):
        raise ValueError(f"clip name {clip_name!r} must be a plain folder name")
    _check_clip_arrays(clip_name, frames, masks, object_ids, frame_files)
    root = Path(root)
    with contextlib.ExitStack() as stack:
        jpeg_dir = stack.enter_context(atomic_path(root / "JPEGImages" / clip_name))
        png_dir = stack.enter_context(atomic_path(root / "Annotations" / clip_name))
        jpeg_dir.mkdir()
        png_dir.mkdir()
        for t in range(frames.shape[0]):
            stem = FRAME_NAME_FORMAT.format(t)
            if frame_files is not None and frame_files[t][1] in ("jpg", "jpeg"):
                (jpeg_dir / f"{stem}.jpg").write_bytes(frame_files[t][0])
            else:
                Image.fromarray(frames[t]).save(jpeg_dir / f"{stem}.jpg", quality=JPEG_QUALITY)
            write_palette_png(png_dir / f"{stem}.png", masks_to_index_map(masks[t]))


def _sorted_files(folder: Path, suffixes: tuple[str, ...], kind: str) -> list[Path]:
    if not folder.is_dir():
        raise FileNotFoundError(f"{folder}: folder of {kind} not found")
    files = sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in suffixes)
    if not files:
        raise ValueError(f"{folder}: no {kind} ({' / '.join(suffixes)} files) in the folder")
    return files


def read_palette_png(path: Path | str) -> np.ndarray:
    """(H, W) uint8 palette indices of a palette PNG; a non-palette PNG is an error."""
    path = Path(path)
    try:
        with Image.open(path) as image:
            if image.mode != "P":
                raise ValueError(
                    f"{path}: annotation must be a palette (mode 'P') PNG of object indices, "
                    f"got mode {image.mode!r}; save masks as index maps with a palette"
                )
            return np.array(image, dtype=np.uint8)
    except FileNotFoundError:
        raise FileNotFoundError(f"{path}: annotation not found") from None
    except OSError as err:
        raise ValueError(f"{path}: not a readable PNG ({err})") from None


def _check_same_size(paths: list[Path], shapes: list[tuple[int, ...]]) -> None:
    for path, shape in zip(paths, shapes, strict=True):
        if shape[:2] != shapes[0][:2]:
            raise ValueError(
                f"{path}: size {shape[1]}x{shape[0]} differs from {paths[0].name} "
                f"({shapes[0][1]}x{shapes[0][0]}); all frames of a video must be one size"
            )


def index_maps_to_masks(index_maps: np.ndarray, object_indices: Sequence[int]) -> np.ndarray:
    """(T, H, W) palette indices -> (T, O, H, W) bool, one mask per index in `object_indices`."""
    indices = np.asarray(object_indices, dtype=np.int64)
    return index_maps[:, None, :, :] == indices[None, :, None, None]


def object_indices_of(index_maps: np.ndarray) -> list[int]:
    """Sorted object indices present in the maps (background 0 and void 255 excluded)."""
    present = np.unique(index_maps)
    return [int(i) for i in present if i not in (0, VOID_INDEX)]


def read_annotation_maps(folder: Path | str) -> tuple[np.ndarray, list[str]]:
    """(T, H, W) uint8 palette indices of the folder's PNGs (sorted by name) and their stems."""
    paths = _sorted_files(Path(folder), (".png",), "annotations")
    maps = [read_palette_png(path) for path in paths]
    _check_same_size(paths, [m.shape for m in maps])
    return np.stack(maps), [path.stem for path in paths]


def read_davis_annotations(folder: Path | str) -> tuple[np.ndarray, list[int], list[str]]:
    """Masks of a folder of palette PNGs (one per frame, sorted by file name).

    Returns (masks (T, O, H, W) bool, object indices (O,), frame names (file stems)).
    Objects are the palette indices present on any frame, ascending; void (255) reads as
    background.
    """
    index_maps, frame_names = read_annotation_maps(folder)
    object_indices = object_indices_of(index_maps)
    return index_maps_to_masks(index_maps, object_indices), object_indices, frame_names


def read_davis_frames(folder: Path | str) -> np.ndarray:
    """(T, H, W, 3) uint8 RGB frames of a folder of JPEGs, sorted by file name."""
    paths = _sorted_files(Path(folder), FRAME_SUFFIXES, "frames")
    frames = []
    for path in paths:
        try:
            with Image.open(path) as image:
                frames.append(np.array(image.convert("RGB")))
        except OSError as err:
            raise ValueError(f"{path}: not a readable image ({err})") from None
    _check_same_size(paths, [f.shape for f in frames])
    return np.stack(frames)
