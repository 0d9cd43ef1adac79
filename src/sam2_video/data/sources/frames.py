"""Frame pixels of every source kind: read in stored orientation, sized, named safely.

Orientation: COCO annotations refer to the *stored* pixel array (pycocotools and the COCO
tools ignore EXIF), so frames are NOT rotated by their EXIF orientation tag; an image
whose stored size differs from the size its annotations state is an error.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
from PIL import Image


def file_safe_name(name: str) -> str:
    """`name` with every character but letters, digits, '.', '_', '-' made '_'."""
    safe = re.sub(r"[^A-Za-z0-9._-]", "_", name)
    return "_" + safe if safe.startswith(".") or not safe else safe


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


def open_image(path: Path) -> Image.Image:
    """The decoded image file (pixels loaded); ValueError naming the file when it is missing
    or unreadable."""
    try:
        with Image.open(path) as image:
            image.load()  # decodes every byte: finds truncated files
        return image  # pixels in memory, the file closed; .format kept
    except FileNotFoundError:
        raise ValueError(f"{path}: image file not found: check the image dir / file_name") from None
    except OSError as err:
        raise ValueError(
            f"{path}: cannot read image ({err}): the file is truncated or not an image; "
            "re-download or re-export it"
        ) from None


def check_size(path: Path, found: tuple[int, int], expected: tuple[int, int]) -> None:
    if tuple(found) != tuple(expected):
        raise ValueError(
            f"{path}: image is {found[0]}x{found[1]} (HxW) but its annotations say "
            f"{expected[0]}x{expected[1]}: fix its height/width (annotations must match the "
            "stored pixels; EXIF orientation is not applied)"
        )


def read_rgb(path: Path, expected_size: tuple[int, int] | None = None) -> np.ndarray:
    """(H, W, 3) uint8 RGB of an image file in its stored orientation (no EXIF rotation).

    Grayscale, palette, RGBA (alpha dropped) and CMYK images are converted by PIL.
    expected_size: (H, W) the annotations assume; a mismatch is an error.
    """
    rgb = np.asarray(open_image(path).convert("RGB"))
    if expected_size is not None:
        check_size(path, rgb.shape[:2], expected_size)
    return rgb
