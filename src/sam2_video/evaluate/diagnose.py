"""A model that says when it cannot see: when the base model loses most objects, the likely
cause that can be measured from the data, and the fix.

The cause measured is the objects' size at the model's input: frames are resized to a
square of `image_size` pixels, so an object's apparent size is its stored area scaled by
image_size^2 / (H x W). A model recognises objects of the sizes it was trained on; the
shipped tiny base saw objects 0.16-0.28 of its 128 px frame across (the synthetic source
domain's radii, 0.08-0.14 of the frame), i.e. 20-36 px.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

LOST_J = 0.1  # an object whose J is below this was not tracked at all
LOST_SHARE = 0.5  # warn when more than this share of the objects is lost
TINY_OBJECT_PX = (20, 36)  # object widths the tiny base was trained on, at 128 px


def object_widths(masks: np.ndarray, image_size: int) -> np.ndarray:
    """(O,) equivalent widths (sqrt of the mean area over the frames that show the object)
    at the model's input, of (T, O, H, W) masks stored at H x W."""
    t, o, h, w = masks.shape
    areas = masks.reshape(t, o, -1).sum(axis=2).astype(float)  # (T, O)
    shown = areas > 0
    mean_area = np.where(shown.any(axis=0), areas.sum(axis=0) / np.maximum(shown.sum(0), 1), 0)
    return np.sqrt(mean_area * image_size**2 / (h * w))


def lost_share(j: Sequence[np.ndarray]) -> float:
    """Share of the objects (per clip (O,) J arrays) that were not tracked at all."""
    flat = np.concatenate([np.asarray(v, dtype=float) for v in j])
    return float(np.mean(flat < LOST_J)) if flat.size else 0.0


def cannot_see(
    base_j: Sequence[np.ndarray],
    widths: Sequence[np.ndarray],
    stored_side: int,
    image_size: int,
    model: str,
) -> str | None:
    """The warning when the base model loses most objects, else None.

    base_j, widths: per clip, the base model's J and the width at the model's input
    (`object_widths`) of its scored objects; stored_side: the longer side of the stored
    frames."""
    lost = lost_share(base_j)
    if lost <= LOST_SHARE:
        return None
    width = float(np.median(np.concatenate([np.asarray(w, dtype=float) for w in widths])))
    upscaled = f", frames upscaled from {stored_side} px" if stored_side < image_size else ""
    seen = ""
    if model == "tiny":
        low, high = TINY_OBJECT_PX
        seen = f"; the tiny base was trained on objects {low}-{high} px across"
    return (
        f"the base model loses {lost:.0%} of the objects (J < {LOST_J}). Objects are a "
        f"median {width:.0f} px across at the model's input ({image_size} px{upscaled})"
        f"{seen}. Likely fix: a SAM2.1 model (model: sam2.1_hiera_*), or larger stored "
        "frames and model input (shard.max_side, train.image_size)"
    )
