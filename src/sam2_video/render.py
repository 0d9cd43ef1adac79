"""GIF frames: ground truth | base | fine-tuned, side by side, one colour per object."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from sam2_video.data.davis import davis_palette
from sam2_video.files import atomic_path

PANEL_TITLES = ("ground truth", "base", "fine-tuned")


def overlay(frame: np.ndarray, masks: np.ndarray, alpha: float = 0.55) -> np.ndarray:
    """(H, W, 3) uint8 frame with (O, H, W) masks blended in; object k gets palette colour k+1.

    Colours follow object order, so an object has the same colour in every panel.
    """
    palette = np.asarray(davis_palette(), np.float32).reshape(-1, 3)
    out = frame.astype(np.float32)
    for k in range(masks.shape[0]):
        colour = palette[k + 1]
        out[masks[k]] = (1 - alpha) * out[masks[k]] + alpha * colour
    return out.clip(0, 255).astype(np.uint8)


def _label(img: Image.Image, text: str) -> None:
    draw = ImageDraw.Draw(img)
    draw.rectangle([0, 0, 7 * len(text) + 6, 13], fill=(0, 0, 0))
    draw.text((3, 1), text, fill=(255, 255, 255))


def comparison_frames(
    frames: np.ndarray, panels: list[np.ndarray], scale: int, titles=PANEL_TITLES
) -> list[Image.Image]:
    """frames (T, H, W, 3); panels: (T, O, H, W) masks per panel -> T side-by-side images."""
    t, h, w = frames.shape[:3]
    out = []
    for f in range(t):
        tiles = []
        for title, masks in zip(titles, panels, strict=True):
            tile = Image.fromarray(overlay(frames[f], masks[f])).resize(
                (w * scale, h * scale), Image.NEAREST
            )
            _label(tile, f"t={f} {title}")
            tiles.append(np.asarray(tile))
        out.append(Image.fromarray(np.concatenate(tiles, axis=1)))
    return out


def write_gif(images: list[Image.Image], path: Path, fps: int) -> None:
    """Looping GIF, written atomically (one shared palette keeps colours stable)."""
    with atomic_path(path) as tmp:
        first, rest = images[0], images[1:]
        first.save(
            tmp,
            format="GIF",
            save_all=True,
            append_images=rest,
            duration=int(1000 / fps),
            loop=0,
            optimize=False,
        )
