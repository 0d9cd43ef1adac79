"""Training batches: clips drawn from stored sources as a function of (seed, step, rank).

A batch flattens all objects of all its clips, as SAM2's trainer does:
  frames       (B, T, 3, S, S) uint8, resized to model size (`transforms.normalize` makes
               the model input where the step runs: uint8 is a quarter of float32's bytes
               through the workers' shared memory and the host-to-device copy)
  gt           (T, N, S, S) bool, masks at model size (N = objects over all clips)
  obj_to_clip  (N,) long, the clip of each object
  frame_keys   per clip, its frames' keys (Clip.frame_keys; None for pseudo-video)
Which sources form step k's batch, and the clip drawn from each (window, objects, motion),
are a pure function of (seed, k, rank, world_size), so a resumed run sees exactly the
batches an uninterrupted run would have seen.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

import numpy as np
import torch

from sam2_video.data.clips import Clip
from sam2_video.data.transforms import masks_to_model_size, resize_frames


class TrainingSources(Protocol):
    """What training draws clips from: a `shards.ShardReader`, or `FixedClips`."""

    @property
    def num_sources(self) -> int: ...

    def training_clip(self, index: int, rng: np.random.Generator) -> Clip: ...


class FixedClips:
    """Clips in memory as training sources: source i always gives clip i."""

    def __init__(self, clips: Sequence[Clip]) -> None:
        self.clips = list(clips)

    @property
    def num_sources(self) -> int:
        return len(self.clips)

    def training_clip(self, index: int, rng: np.random.Generator) -> Clip:
        return self.clips[index]


@dataclass
class Batch:
    frames: torch.Tensor  # (B, T, 3, S, S) uint8
    gt: torch.Tensor  # (T, N, S, S) bool
    obj_to_clip: torch.Tensor  # (N,)
    names: list[str]
    frame_keys: list[tuple[str, ...] | None]

    def to(self, device: torch.device | str) -> Batch:
        moved = (self.frames.to(device), self.gt.to(device), self.obj_to_clip.to(device))
        return Batch(*moved, self.names, self.frame_keys)


def clip_tensors(clip: Clip, image_size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(T, 3, S, S) uint8 frames and (T, O, S, S) bool masks of one clip, at model size."""
    frames = resize_frames(clip.frames, image_size)
    return frames, masks_to_model_size(clip.masks, image_size)


def collate(clips: Sequence[Clip], image_size: int) -> Batch:
    images, gts, owners = [], [], []
    for i, clip in enumerate(clips):
        img, gt = clip_tensors(clip, image_size)
        images.append(img)
        gts.append(gt)
        owners += [i] * clip.num_objects
    owner = torch.tensor(owners, dtype=torch.long)
    names, keys = [c.name for c in clips], [c.frame_keys for c in clips]
    return Batch(torch.stack(images), torch.cat(gts, dim=1), owner, names, keys)


def batch_indices(
    num_sources: int, batch_size: int, step: int, seed: int, rank: int = 0, world_size: int = 1
) -> list[int]:
    """Source indices of optimizer step `step` for one process (epoch-wise shuffling).

    The global batch (batch_size x world_size sources) is one slice of a seeded permutation
    of the whole split; each rank takes its own contiguous part of that slice.
    """
    global_batch = batch_size * world_size
    per_epoch = max(num_sources // global_batch, 1)
    epoch, offset = divmod(step, per_epoch)
    order = np.random.default_rng([seed, epoch]).permutation(num_sources)
    order = np.resize(order, max(num_sources, global_batch))  # tiny splits: repeat sources
    start = offset * global_batch + rank * batch_size
    return order[start : start + batch_size].tolist()


def clip_rng(seed: int, step: int, rank: int, slot: int) -> np.random.Generator:
    """The generator of the clip in place `slot` of (step, rank)'s batch."""
    return np.random.default_rng([seed, step, rank, slot])


class StepBatches(torch.utils.data.Dataset):
    """Dataset whose item k is the whole batch of step k (so DataLoader workers prefetch)."""

    def __init__(
        self,
        sources: TrainingSources,
        batch_size: int,
        image_size: int,
        seed: int,
        rank: int = 0,
        world_size: int = 1,
        steps: int = 0,
    ) -> None:
        self.sources, self.batch_size, self.image_size = sources, batch_size, image_size
        self.seed, self.rank, self.world_size, self.steps = seed, rank, world_size, steps

    def __len__(self) -> int:
        return self.steps

    def __getitem__(self, step: int) -> Batch:
        indices = batch_indices(
            self.sources.num_sources, self.batch_size, step, self.seed, self.rank, self.world_size
        )
        clips = [
            self.sources.training_clip(index, clip_rng(self.seed, step, self.rank, slot))
            for slot, index in enumerate(indices)
        ]
        return collate(clips, self.image_size)
