"""DAVIS-style folders as sources: JPEGImages/<video>/*.jpg + Annotations/<video>/*.png.

Each frame's palette PNG (same file stem as its JPEG) holds object indices: 0 background,
1..254 objects (object id = palette index), 255 void (read as background, as DAVIS does).
Frames are ordered by stem, numerically when every stem is a number (DAVIS: 00000, 00001...).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from sam2_video.data.davis import FRAME_SUFFIXES, VOID_INDEX, read_palette_png
from sam2_video.data.sources import VideoFiles


@dataclass(frozen=True)
class DavisVideo(VideoFiles):
    """One video folder pair (a `Source`); pixels stay on disk until they are stored."""

    name: str
    frame_paths: tuple[Path, ...]  # JPEGs in frame order
    annotation_paths: tuple[Path, ...]  # the palette PNG of each frame (same stem)
    frame_size_hw: tuple[int, int]  # (H, W) of every frame

    def frame_size(self, index: int) -> tuple[int, int]:
        return self.frame_size_hw

    def frame_masks(self, index: int) -> dict[int, np.ndarray]:
        path = self.annotation_paths[index]
        index_map = read_palette_png(path)  # (H, W) uint8
        if index_map.shape != self.frame_size_hw:
            raise ValueError(
                f"{path}: size {index_map.shape} (HxW) differs from its frame's "
                f"{self.frame_size_hw}: re-export the annotation at the frame's size"
            )
        present = np.flatnonzero(np.bincount(index_map.reshape(-1), minlength=256))
        return {int(i): index_map == i for i in present if i not in (0, VOID_INDEX)}


# ---------------------------------------------------------------------------- folders


def _frame_order(path: Path) -> tuple[int, int | str]:
    return (0, int(path.stem)) if path.stem.isdigit() else (1, path.stem)


def _files_by_stem(folder: Path, suffixes: tuple[str, ...], kind: str) -> dict[str, Path]:
    if not folder.is_dir():
        raise FileNotFoundError(f"{folder}: folder of {kind} not found")
    by_stem: dict[str, Path] = {}
    for path in sorted(folder.iterdir()):
        if path.is_file() and path.suffix.lower() in suffixes:
            if path.stem in by_stem:
                raise ValueError(f"{path}: two {kind} files share the stem of {by_stem[path.stem]}")
            by_stem[path.stem] = path
    if not by_stem:
        raise ValueError(f"{folder}: no {kind} ({' / '.join(suffixes)} files) in the folder")
    return by_stem


def _matched_frames(jpeg_dir: Path, png_dir: Path) -> list[tuple[Path, Path]]:
    """(JPEG, PNG) pairs in frame order; a frame without its partner is an error."""
    jpegs = _files_by_stem(jpeg_dir, FRAME_SUFFIXES, "frames")
    pngs = _files_by_stem(png_dir, (".png",), "annotations")
    for stem, path in jpegs.items():
        if stem not in pngs:
            raise ValueError(
                f"{path}: no annotation {png_dir / (stem + '.png')}: every frame needs a "
                "palette PNG of the same name (object id = palette index)"
            )
    for stem, path in pngs.items():
        if stem not in jpegs:
            raise ValueError(f"{path}: annotation without a frame {jpeg_dir / (stem + '.jpg')}")
    return sorted(((jpegs[s], pngs[s]) for s in jpegs), key=lambda pair: _frame_order(pair[0]))


def _header_size(path: Path, palette: bool) -> tuple[int, int]:
    """(H, W) from the file header (no decode); PNGs must be palette images."""
    try:
        with Image.open(path) as image:
            if palette and image.mode != "P":
                raise ValueError(
                    f"{path}: annotation must be a palette (mode 'P') PNG of object indices, "
                    f"got mode {image.mode!r}"
                )
            return image.height, image.width
    except OSError as err:
        raise ValueError(f"{path}: not a readable image ({err})") from None


def _check_sizes(pairs: list[tuple[Path, Path]]) -> tuple[int, int]:
    size = _header_size(pairs[0][0], palette=False)
    for jpeg, png in pairs:
        for path, palette in ((jpeg, False), (png, True)):
            found = _header_size(path, palette)
            if found != size:
                raise ValueError(
                    f"{path}: size {found[1]}x{found[0]} (WxH) differs from "
                    f"{size[1]}x{size[0]} of {pairs[0][0]}: frames and annotations of a video "
                    "must share one size"
                )
    return size


def _load_video(name: str, jpeg_dir: Path, png_dir: Path) -> DavisVideo:
    pairs = _matched_frames(jpeg_dir, png_dir)
    return DavisVideo(
        name=name,
        frame_paths=tuple(jpeg for jpeg, _ in pairs),
        annotation_paths=tuple(png for _, png in pairs),
        frame_size_hw=_check_sizes(pairs),
    )


def load_davis_videos(
    root: Path, *, resolution: str | None = None, names: Sequence[str] | None = None
) -> list[DavisVideo]:
    """Videos of a DAVIS root, sorted by name (or in the order of `names`).

    resolution: a level folder such as "480p" (official DAVIS: JPEGImages/480p/<video>).
    names: only these videos (e.g. the lines of ImageSets/2017/train.txt).
    File headers are read to check pairing, palette mode and sizes; errors name the file.
    """
    root = Path(root)
    jpeg_root, png_root = root / "JPEGImages", root / "Annotations"
    if resolution is not None:
        jpeg_root, png_root = jpeg_root / resolution, png_root / resolution
    for folder in (jpeg_root, png_root):
        if not folder.is_dir():
            raise FileNotFoundError(
                f"{folder}: not found: a DAVIS root holds JPEGImages/<video>/ and "
                "Annotations/<video>/ (pass resolution='480p' for the official layout)"
            )
    if names is None:
        names = sorted(p.name for p in jpeg_root.iterdir() if p.is_dir())
        if not names:
            raise ValueError(f"{jpeg_root}: no video folders")
    return [_load_video(name, jpeg_root / name, png_root / name) for name in names]
