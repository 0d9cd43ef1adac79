"""The unit every stage passes around: a short clip of frames with per-object masks."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Clip:
    """A clip at its stored resolution.

    frames:     (T, H, W, 3) uint8 RGB
    masks:      (T, O, H, W) bool; an object absent on a frame has an all-False mask there
    object_ids: (O,) ids stable across the source video (track id, else category id)
    name:       unique and filesystem-safe, e.g. "<video>__<first frame index:05d>"
    source_frames: the indices of its frames in its source (video), consecutive, when
                clips of one source may share frames (sliding windows): clips of one
                source with the same index carry the same pixels there, so shards store
                such a frame once. None: the frames are the clip's own (pseudo-video).
    """

    name: str
    frames: np.ndarray
    masks: np.ndarray
    object_ids: tuple[int, ...]
    source_frames: range | None = None

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
        span = self.source_frames
        if span is not None and (span.step != 1 or len(span) != t or span.start < 0):
            raise ValueError(
                f"clip {self.name}: source_frames {span} must be {t} consecutive indices >= 0"
            )

    @property
    def num_frames(self) -> int:
        return self.frames.shape[0]

    @property
    def num_objects(self) -> int:
        return self.masks.shape[1]


def window_clip(
    source: str,
    start: int,
    rgb: np.ndarray,
    frame_masks: Sequence[Mapping[int, np.ndarray]],
    object_ids: Sequence[int],
) -> Clip:
    """The clip of a sliding window over `source` from its frame `start`: named
    "<source>__<start:05d>", with source_frames. rgb: (T, h, w, 3); frame_masks: per frame,
    object id -> (h, w) bool mask; an object missing there gets an empty mask."""
    t, height, width = rgb.shape[:3]
    empty = np.zeros((height, width), dtype=bool)
    masks = np.stack([masks.get(oid, empty) for masks in frame_masks for oid in object_ids])
    masks = masks.reshape(t, len(object_ids), height, width)  # (T, O, h, w)
    span = range(start, start + t)
    return Clip(f"{source}__{start:05d}", rgb, masks, tuple(object_ids), span)


def window_starts(num_frames: int, clip_length: int, stride: int) -> list[int]:
    """First-frame indices of the sliding windows of `clip_length` frames, every `stride`."""
    if clip_length < 1 or stride < 1:
        raise ValueError("clip_length and stride must be >= 1")
    return list(range(0, num_frames - clip_length + 1, stride))


def objects_on_first_frame(
    masks: np.ndarray, max_objects: int, rng: np.random.Generator
) -> np.ndarray:
    """Indices of the objects present on frame 0 (as SAM2's sampler), at most `max_objects`.

    masks: (T, O, H, W) bool. When more objects are present than allowed, a seeded random
    subset is kept, in ascending index order so that output does not depend on draw order.
    """
    present = np.flatnonzero(masks[0].reshape(masks.shape[1], -1).any(axis=1))
    if len(present) > max_objects:
        present = np.sort(rng.choice(present, size=max_objects, replace=False))
    return present
