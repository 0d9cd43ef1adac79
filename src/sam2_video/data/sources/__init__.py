"""Data sources: where frames and masks come from, behind one small interface.

A source is one video (its frames in order) or one static image (a single frame, made into
pseudo-video when a clip is read). Every kind (coco_video, coco_images, davis) gives
objects that satisfy `Source`; the shard stage stores sources through it and nothing else.
`synthetic` writes a COCO-format video dataset to disk, read back by coco_video.
"""

from __future__ import annotations

from pathlib import Path
from typing import Protocol

import numpy as np


class Source(Protocol):
    """One video or static image of a dataset."""

    @property
    def name(self) -> str:
        """File-safe and unique in its split: the stem of its clips' names."""

    @property
    def still(self) -> bool:
        """True for a static image (pseudo-video at read time), False for a video."""

    @property
    def num_frames(self) -> int: ...

    def frame_path(self, index: int) -> Path:
        """The image file of frame `index`."""

    def frame_size(self, index: int) -> tuple[int, int]:
        """(H, W) of frame `index` as the annotations state it (the file must agree)."""

    def frame_masks(self, index: int) -> dict[int, np.ndarray]:
        """object id -> (H, W) bool mask of frame `index` at source resolution; an object
        not annotated there is left out. Bad masks raise ValueError naming file and field."""


class VideoFiles:
    """What every video source shares: its frames are the image files `frame_paths`."""

    still = False
    frame_paths: tuple[Path, ...]

    @property
    def num_frames(self) -> int:
        return len(self.frame_paths)

    def frame_path(self, index: int) -> Path:
        return self.frame_paths[index]
