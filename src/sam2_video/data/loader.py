"""Training batches from clip shards.

A batch flattens all objects of all its clips, as SAM2's trainer does:
  images       (B, T, 3, S, S) float, normalised as SAM2VideoPredictor does
  gt           (T, N, S, S) bool, masks at model size (N = objects over all clips)
  obj_to_clip  (N,) long, the clip of each object
Which clips form step k's batch is a pure function of (seed, k, rank, world_size), so a
resumed run sees exactly the batches an uninterrupted run would have seen.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from sam2_video.data.clips import Clip
from sam2_video.model.transforms import frames_to_model_input, masks_to_model_size


@dataclass
class Batch:
    images: torch.Tensor  # (B, T, 3, S, S)
    gt: torch.Tensor  # (T, N, S, S) bool
    obj_to_clip: torch.Tensor  # (N,)
    names: list[str]

    def to(self, device: torch.device | str) -> Batch:
        return Batch(self.images.to(device), self.gt.to(device), self.obj_to_clip.to(device),
                     self.names)  # fmt: skip


def clip_tensors(clip: Clip, image_size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(T, 3, S, S) model input and (T, O, S, S) bool masks of one clip."""
    return frames_to_model_input(clip.frames, image_size), masks_to_model_size(
        clip.masks, image_size
    )


def collate(clips: Sequence[Clip], image_size: int) -> Batch:
    images, gts, owners = [], [], []
    for i, clip in enumerate(clips):
        img, gt = clip_tensors(clip, image_size)
        images.append(img)
        gts.append(gt)
        owners += [i] * clip.num_objects
    return Batch(torch.stack(images), torch.cat(gts, dim=1), torch.tensor(owners, dtype=torch.long),
                 [c.name for c in clips])  # fmt: skip


def batch_indices(
    num_clips: int, batch_size: int, step: int, seed: int, rank: int = 0, world_size: int = 1
) -> list[int]:
    """Clip indices of optimizer step `step` for one process (epoch-wise shuffling).

    The global batch (batch_size x world_size clips) is one slice of a seeded permutation
    of the whole split; each rank takes its own contiguous part of that slice.
    """
    global_batch = batch_size * world_size
    per_epoch = max(num_clips // global_batch, 1)
    epoch, offset = divmod(step, per_epoch)
    order = np.random.default_rng([seed, epoch]).permutation(num_clips)
    order = np.resize(order, max(num_clips, global_batch))  # tiny splits: repeat clips
    start = offset * global_batch + rank * batch_size
    return order[start : start + batch_size].tolist()


class StepBatches(torch.utils.data.Dataset):
    """Dataset whose item k is the whole batch of step k (so DataLoader workers prefetch)."""

    def __init__(self, reader, batch_size, image_size, seed, rank=0, world_size=1, steps=0):
        self.reader, self.batch_size, self.image_size = reader, batch_size, image_size
        self.seed, self.rank, self.world_size, self.steps = seed, rank, world_size, steps

    def __len__(self) -> int:
        return self.steps

    def __getitem__(self, step: int) -> Batch:
        idx = batch_indices(len(self.reader), self.batch_size, step, self.seed, self.rank,
                            self.world_size)  # fmt: skip
        return collate([self.reader[i] for i in idx], self.image_size)
