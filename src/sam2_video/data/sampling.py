"""Clips made from stored sources when a sample is read (SAM2's sampler, XMem's pseudo-video).

Training: a clip of `clip_length` frames from a video starts at a random frame whose
eligible objects (`shards` module docstring) are not empty; its objects are those, at most
`max_objects` drawn with the generator. A static image becomes pseudo-video by a motion
drawn at every visit (`motion`). All randomness comes from the generator the caller
passes, a function of (seed, step, rank) in training.

Fixed clips (validation, evaluation, export): each video whole (its first `val_max_frames`
with a cap) with every object that is eligible on any of its frames, as DAVIS, YouTube-VOS,
MOSE and SA-V score them; or, with `val_windows`, windows every `stride` frames that start
on a frame with an eligible object; and one pseudo-video per static image. Their draws come
from the source's own generator (`source_rng(shard.seed, source index)`), consumed window
after window as the clip shards of format 2 drew them when they were written: every
experiment scores the same clips, the same ones earlier runs scored.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import TYPE_CHECKING, Protocol

import numpy as np

from sam2_video.data import motion
from sam2_video.data.clips import Clip, choose_at_most, window_starts
from sam2_video.params import ShardParams

if TYPE_CHECKING:
    from sam2_video.data.shards import StoredSource

# Motions drawn for a pseudo-video clip before the image is used unmoved: every draw moved
# all objects out of the first frame (rare: only large translations with small objects)
MOTION_TRIES = 10


class _Indexed(Protocol):
    name: str
    still: bool
    eligible: tuple[tuple[int, ...], ...]


# a whole validation video has at least this many frames: its first and last are not scored
MIN_WHOLE_VIDEO_FRAMES = 3


def clip_name(source: _Indexed, start: int, p: ShardParams | None = None) -> str:
    """The name "<video>__<start:05d>" for a window; the video's or image's own name for a
    whole video (`p.val_windows` false) or a pseudo-video."""
    whole = p is not None and not p.val_windows
    return source.name if source.still or whole else f"{source.name}__{start:05d}"


def whole_video_length(source: _Indexed, p: ShardParams) -> int:
    """Frames of a whole validation video: all, or the first `val_max_frames`."""
    n = len(source.eligible)
    return min(n, p.val_max_frames) if p.val_max_frames else n


def source_rng(seed: int, index: int) -> np.random.Generator:
    """The generator of source `index`: SeedSequence(seed).spawn(n)[index], for any n."""
    return np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(index,)))


def _fixed_starts(source: _Indexed, p: ShardParams) -> list[int]:
    if source.still:
        return [0]
    if not p.val_windows:  # the whole video, if an object shows on a frame that is scored
        scored = source.eligible[: whole_video_length(source, p) - 1]
        return [0] if any(scored) else []
    starts = window_starts(len(source.eligible), p.clip_length, p.stride)
    return [start for start in starts if source.eligible[start]]


def fixed_clip_starts(sources: Sequence[_Indexed], p: ShardParams) -> list[tuple[int, int]]:
    """(source index, start) of every fixed clip, in source order."""
    return [(index, start) for index, s in enumerate(sources) for start in _fixed_starts(s, p)]


def window_clip(source: StoredSource, start: int, object_ids: Sequence[int], length: int) -> Clip:
    """The clip of frames [start, start + length) of a video and the objects `object_ids`."""
    indices = range(start, start + length)
    keys = tuple(f"{source.name}/{index:05d}" for index in indices)
    return Clip(
        clip_name(source, start),
        source.frames(indices),
        source.masks(indices, object_ids),
        tuple(object_ids),
        keys,
    )


def still_clip(source: StoredSource, p: ShardParams, rng: np.random.Generator) -> Clip:
    """A pseudo-video clip of a static image, its motion drawn with `rng`."""
    rgb = source.frames([0])[0]  # (h, w, 3)
    ids = source.eligible[0]
    masks = source.masks([0], ids)[0]  # (C, h, w)
    for _ in range(MOTION_TRIES):
        clip = motion.pseudo_video_clip(
            source.name, rgb, masks, ids, p.clip_length, p.max_objects, p.motion, rng
        )
        if clip is not None:
            return clip
    chosen = choose_at_most(range(len(ids)), p.max_objects, rng)
    frames = np.repeat(rgb[None], p.clip_length, axis=0)  # (T, h, w, 3)
    clip_masks = np.repeat(masks[chosen][None], p.clip_length, axis=0)  # (T, O, h, w)
    return Clip(source.name, frames, clip_masks, tuple(ids[i] for i in chosen))


def training_clip(source: StoredSource, p: ShardParams, rng: np.random.Generator) -> Clip:
    """A clip drawn from one source with `rng` (module docstring)."""
    if source.still:
        return still_clip(source, p, rng)
    last = source.num_frames - p.clip_length
    starts = [start for start in range(last + 1) if source.eligible[start]]
    start = starts[int(rng.integers(len(starts)))]
    object_ids = choose_at_most(source.eligible[start], p.max_objects, rng)
    return window_clip(source, start, object_ids, p.clip_length)


def fixed_clip(source: StoredSource, index: int, start: int, p: ShardParams) -> Clip:
    """The fixed clip of source `index` starting at `start` (`fixed_clip_starts`)."""
    rng = source_rng(p.seed, index)
    if source.still:
        return still_clip(source, p, rng)
    if not p.val_windows:  # every object of the video, also those that enter later
        length = whole_video_length(source, p)
        object_ids = sorted({o for frame in source.eligible[:length] for o in frame})
        clip = window_clip(source, 0, object_ids, length)
        return dataclasses.replace(clip, name=source.name)
    for earlier in _fixed_starts(source, p):  # the draws of the source's earlier windows
        if earlier == start:
            break
        choose_at_most(source.eligible[earlier], p.max_objects, rng)
    object_ids = choose_at_most(source.eligible[start], p.max_objects, rng)
    return window_clip(source, start, object_ids, p.clip_length)
