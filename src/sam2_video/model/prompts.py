"""Prompts sampled from ground truth: points, boxes and correction clicks.

All coordinates are SAM2's: pixels of the square model input, (x, y) order; labels are
1 positive, 0 negative, 2/3 box corners, -1 padding. Randomness comes only from the
`torch.Generator` passed in, so a seeded run samples the same prompts every time.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

PAD_LABEL = -1


def _sample_pixels(region: torch.Tensor, num: int, gen: torch.Generator) -> torch.Tensor:
    """(N, num, 2) xy of pixels drawn uniformly from each (H, W) region; (0, 0) if empty.

    Inverse-CDF sampling: draw the rank of a pixel among the region's, find it with a
    search over the running count. (torch.multinomial over H*W weights cost 8% of a
    training step with correction clicks.)
    """
    n, h, w = region.shape
    running = region.flatten(1).cumsum(dim=1, dtype=torch.int32)  # (N, HW) pixels so far
    count = running[:, -1:]  # (N, 1)
    u = torch.rand((n, num), generator=gen, dtype=torch.float64).to(region.device)
    rank = (u * count).to(torch.int32)  # 0-based rank among the region's pixels, < count
    idx = torch.searchsorted(running, rank + 1)  # (N, num) first running count >= rank+1
    idx = torch.where(count > 0, idx, torch.zeros_like(idx))
    return torch.stack([idx % w, idx // w], dim=-1).float()


def _is_empty(masks: torch.Tensor) -> torch.Tensor:
    """(N,) no pixel set. The max of the bytes: bool any() is a ~20x slower reduction on
    CPU, and this runs on 128 px masks at every correction click."""
    return masks.flatten(1).view(torch.uint8).amax(dim=1) == 0


def center_points(masks: torch.Tensor) -> torch.Tensor:
    """(N, 1, 2) the pixel deepest inside each mask (the last one left when eroding)."""
    current = masks.float()[:, None]  # (N, 1, H, W)
    deepest = current
    while bool(current.flatten(1).any()):
        nonempty = current.flatten(1).any(dim=1)[:, None, None, None]
        deepest = torch.where(nonempty, current, deepest)
        current = -F.max_pool2d(-current, kernel_size=3, stride=1, padding=1)
    w = masks.shape[-1]
    idx = deepest.flatten(1).argmax(dim=1)  # first pixel of the last non-empty erosion
    return torch.stack([idx % w, idx // w], dim=-1).float()[:, None]


def point_prompts(
    masks: torch.Tensor, num_pos_points: int, include_center: bool, gen: torch.Generator
) -> tuple[torch.Tensor, torch.Tensor]:
    """Positive clicks on each object. masks: (N, H, W) bool -> coords (N, P, 2), labels (N, P)."""
    coords = _sample_pixels(masks, num_pos_points, gen)
    if include_center:
        coords = torch.cat([center_points(masks), coords[:, : max(num_pos_points - 1, 0)]], 1)
    labels = torch.ones(coords.shape[:2], dtype=torch.int32, device=masks.device)
    labels[_is_empty(masks)] = PAD_LABEL
    return coords, labels


def box_prompts(
    masks: torch.Tensor, jitter: float, gen: torch.Generator
) -> tuple[torch.Tensor, torch.Tensor]:
    """Bounding boxes as SAM2 corner points, each side moved by up to `jitter` x box size."""
    n, h, w = masks.shape
    rows, cols = masks.any(dim=2), masks.any(dim=1)  # (N, H), (N, W)
    ar_h = torch.arange(h, device=masks.device).float()
    ar_w = torch.arange(w, device=masks.device).float()
    big = float(max(h, w))
    y0 = torch.where(rows, ar_h, big).amin(1)
    y1 = torch.where(rows, ar_h, -1.0).amax(1)
    x0 = torch.where(cols, ar_w, big).amin(1)
    x1 = torch.where(cols, ar_w, -1.0).amax(1)
    box = torch.stack([x0, y0, x1, y1], dim=1)  # (N, 4)
    size = torch.stack([x1 - x0, y1 - y0, x1 - x0, y1 - y0], dim=1).clamp(min=1.0)
    noise = torch.rand(box.shape, generator=gen).to(box.device) * 2 - 1
    box = box + noise * jitter * size
    limit = torch.tensor([w - 1, h - 1, w - 1, h - 1], device=box.device, dtype=box.dtype)
    box = torch.minimum(box.clamp(min=0), limit)
    labels = torch.tensor([2, 3], dtype=torch.int32, device=masks.device).repeat(n, 1)
    labels[_is_empty(masks)] = PAD_LABEL
    return box.view(n, 2, 2), labels


def correction_clicks(
    gt: torch.Tensor, pred: torch.Tensor, gen: torch.Generator
) -> tuple[torch.Tensor, torch.Tensor]:
    """One click per object from its error region, as SAM2's interactive training samples them.

    gt, pred: (N, H, W) bool. A pixel is drawn uniformly from false negatives (label 1) and
    false positives (label 0); an object without errors gets a positive click inside it,
    or padding when it is absent.
    """
    region = gt ^ pred  # the errors ...
    no_error = _is_empty(region)
    region[no_error] = gt[no_error]  # ... or the object itself where there are none
    coords = _sample_pixels(region, 1, gen)  # (N, 1, 2)
    x, y = coords[:, 0, 0].long(), coords[:, 0, 1].long()
    on_object = gt[torch.arange(gt.shape[0], device=gt.device), y, x]
    labels = on_object.to(torch.int32)[:, None]
    labels[no_error & _is_empty(gt)] = PAD_LABEL
    return coords, labels


def concat_points(
    points: tuple[torch.Tensor, torch.Tensor] | None, coords: torch.Tensor, labels: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    if points is None:
        return coords, labels
    return torch.cat([points[0], coords], dim=1), torch.cat([points[1], labels], dim=1)
