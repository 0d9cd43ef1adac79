"""SAM2's video-training losses as pure functions.

Per frame and per prediction step: focal (or BCE) + dice on the best of the multimask
outputs, L1 between predicted and actual IoU, and an object-score loss. Mask, dice and IoU
terms count only where the object is present (SAM2's convention: the object-score head
alone learns "absent"). Everything is summed over objects and divided by their number.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F


@dataclass(frozen=True)
class LossWeights:
    mask: float = 20.0
    dice: float = 1.0
    iou: float = 1.0
    object_score: float = 1.0
    temporal: float = 0.0
    focal_alpha: float = 0.25
    focal_gamma: float = 2.0
    use_focal: bool = True


def focal_loss(logits: torch.Tensor, targets: torch.Tensor, alpha: float, gamma: float):
    """(N, M, H, W) logits vs 0/1 targets -> (N, M), mean over pixels (RetinaNet focal loss).

    For 0/1 targets the cross-entropy is -log(p_t), so p_t = exp(-ce): one op instead of a
    sigmoid and four blends (the loss runs on every multimask output of every step).
    """
    ce = F.binary_cross_entropy_with_logits(logits, targets, reduction="none")
    loss = ce * (1 - torch.exp(-ce)) ** gamma
    if alpha >= 0:
        loss = ((1 - alpha) + (2 * alpha - 1) * targets) * loss  # alpha on 1s, 1-alpha on 0s
    return loss.flatten(2).mean(-1)


def bce_loss(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    ce = F.binary_cross_entropy_with_logits(logits, targets, reduction="none")
    return ce.flatten(2).mean(-1)


def dice_loss(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """(N, M, H, W) -> (N, M): 1 - (2|P.G| + 1) / (|P| + |G| + 1) with soft P."""
    prob = logits.sigmoid().flatten(2)
    tgt = targets.flatten(2)
    return 1 - (2 * (prob * tgt).sum(-1) + 1) / (prob.sum(-1) + tgt.sum(-1) + 1)


def iou_prediction_loss(logits, targets, pred_ious) -> torch.Tensor:
    """(N, M): |predicted IoU - IoU of the thresholded mask with the target|."""
    pred = logits.flatten(2) > 0
    gt = targets.flatten(2) > 0
    inter = (pred & gt).sum(-1).float()
    union = (pred | gt).sum(-1).float().clamp(min=1.0)
    return (pred_ious - inter / union).abs()


def step_losses(
    multimask_logits: torch.Tensor,
    pred_ious: torch.Tensor,
    object_score_logits: torch.Tensor,
    gt: torch.Tensor,
    w: LossWeights,
) -> dict[str, torch.Tensor]:
    """Losses of one prediction step, summed over the N objects.

    multimask_logits (N, M, H, W); pred_ious (N, M); object_score_logits (N, 1);
    gt (N, H, W) bool at the logits' resolution.
    """
    targets = gt[:, None].float().expand_as(multimask_logits)
    if w.use_focal:
        mask = focal_loss(multimask_logits, targets, w.focal_alpha, w.focal_gamma)
    else:
        mask = bce_loss(multimask_logits, targets)
    dice = dice_loss(multimask_logits, targets)
    iou = iou_prediction_loss(multimask_logits, targets, pred_ious)
    best = torch.argmin(mask * w.mask + dice * w.dice, dim=1)  # best-of-multimask
    rows = torch.arange(best.shape[0], device=best.device)
    present = gt.flatten(1).any(dim=1).float()  # (N,)
    obj = F.binary_cross_entropy_with_logits(
        object_score_logits[:, 0].float(), present, reduction="sum"
    )
    # SAM2.1's training config (supervise_all_iou) trains the IoU head on every output mask
    return {
        "mask": (mask[rows, best] * present).sum(),
        "dice": (dice[rows, best] * present).sum(),
        "iou": (iou.mean(dim=1) * present).sum(),
        "object_score": obj,
    }


def temporal_consistency(prev_logits: torch.Tensor, logits: torch.Tensor) -> torch.Tensor:
    """Sum over objects of mean |p_t - p_{t-1}| of the final masks (N, 1, H, W)."""
    return (logits.sigmoid() - prev_logits.sigmoid()).abs().flatten(1).mean(-1).sum()


def total_loss(parts: dict[str, torch.Tensor], w: LossWeights) -> torch.Tensor:
    return (
        parts["mask"] * w.mask
        + parts["dice"] * w.dice
        + parts["iou"] * w.iou
        + parts["object_score"] * w.object_score
        + parts.get("temporal", torch.zeros(())) * w.temporal
    )


def clip_losses(
    frames: list, gt: torch.Tensor, w: LossWeights, num_objects: float | None = None
) -> dict[str, torch.Tensor]:
    """Sum of step losses over all frames and steps, divided by the number of objects.

    frames: rollout.FrameOutput per frame; gt (T, N, S, S) bool. Under DDP pass the mean
    object count over ranks (as SAM2 does): averaged gradients then equal those of one
    process holding the whole global batch.
    """
    num_objects = max(gt.shape[1] if num_objects is None else num_objects, 1.0)
    parts: dict[str, torch.Tensor] = {}
    for t, frame in enumerate(frames):
        for step in frame.steps:
            for k, v in step_losses(
                step.multimask_logits, step.ious, step.object_score_logits, gt[t], w
            ).items():
                parts[k] = parts.get(k, 0) + v
        if w.temporal > 0 and t > 0:
            term = temporal_consistency(frames[t - 1].logits, frame.logits)
            parts["temporal"] = parts.get("temporal", 0) + term
    parts = {k: v / num_objects for k, v in parts.items()}
    parts["total"] = total_loss(parts, w)
    return parts
