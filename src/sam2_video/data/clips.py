"""The unit every stage passes around: a short clip of frames with per-object masks."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Clip:
    """A clip at its stored resolution.

    frames:     (T, H, W, 3) uint8 RGB
    masks:      (T, O, H, W) bool; an object absent on a frame has an all-False mask there
    object_ids: (O,) ids stable across the source video (track id, else category id)
    name:       unique and filesystem-safe, e.g. "<video>__<first frame index:05d>"
    frame_keys: per frame, a key of its pixels ("<source>/<frame index:05d>"): frames with
                one key are the same pixels in every clip (a video's windows), so their
                encoder output can be cached. None: the frames are this clip's own
                (pseudo-video, made anew at every visit).
    """

    name: str
    frames: np.ndarray
    masks: np.ndarray
    object_ids: tuple[int, ...]
    frame_keys: tuple[str, ...] | None = None

    def __post_init__(self) -> None:
        t, h, w, c = self.frames.shape
        if c != 3 or self.frames.dtype != np.uint8:
            raise ValueError(f"clip {self.name}: frames must be (T,H,W,3) uint8")
        if self.masks.dtype != np.bool_ or self.masks.shape[0] != t:
            raise ValueError(f"clip {self.name}: masks must be (T,O,H,W) bool")
        if self.masks.shape[2:] != (h, w) or self.masks.shape[1] != len(self.object_ids):
            raise ValueError(
                f"clip {self.name}: masks {self.masks.shape} do not match frames "
                f"{self.frames.shape} / {len(self.object_ids)} object ids"
            )
        if self.frame_keys is not None and len(self.frame_keys) != t:
            raise ValueError(f"clip {self.name}: {len(self.frame_keys)} frame keys for {t} frames")

    @property
    def num_frames(self) -> int:
        return self.frames.shape[0]

    @property
    def num_objects(self) -> int:
        return self.masks.shape[1]


def window_starts(num_frames: int, clip_length: int, stride: int) -> list[int]:
    """First-frame indices of the sliding windows of `clip_length` frames, every `stride`."""
    if clip_length < 1 or stride < 1:
        raise ValueError("clip_length and stride must be >= 1")
    return list(range(0, num_frames - clip_length + 1, stride))


def choose_at_most(items: Sequence[int], count: int, rng: np.random.Generator) -> list[int]:
    """`items` when there are at most `count`, else a seeded random subset of `count`, in
    ascending order so that the output does not depend on draw order."""
    if len(items) <= count:
        return list(items)
    return sorted(int(i) for i in rng.choice(np.asarray(items), size=count, replace=False))


def objects_on_first_frame(
    masks: np.ndarray, max_objects: int, rng: np.random.Generator
) -> list[int]:
    """Indices of the objects present on frame 0 (as SAM2's sampler), at most `max_objects`.

    masks: (T, O, H, W) bool. When more objects are present than allowed, a seeded random
    subset is kept (`choose_at_most`).
    """
    present = np.flatnonzero(masks[0].reshape(masks.shape[1], -1).any(axis=1))
    return choose_at_most(present.tolist(), max_objects, rng)
