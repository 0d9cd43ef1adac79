"""SAM2's video-training losses as pure functions.

Per frame and per prediction step: focal (or BCE) + dice on the best of the multimask
outputs, L1 between predicted and actual IoU, and an object-score loss. Mask, dice and IoU
terms count only where the object is present (SAM2's convention: the object-score head
alone learns "absent"). Everything is summed over objects and divided by their number.
The weights and the mask loss's kind are a recipes.LossRecipe.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from sam2_video.model.recipes import LossRecipe

# SAM2's focal loss constants (sam2/training/loss_fns.py); not tuned per run
FOCAL_ALPHA, FOCAL_GAMMA = 0.25, 2.0


@dataclass(frozen=True)
class Targets:
    """One frame's ground truth in the forms the pixel-wise losses read, built once per
    frame and shared by its prediction steps (eight with seven correction clicks).

    All (N, 1, H*W) tensors broadcast over the M masks of a step.
    """

    mask: torch.Tensor  # (N, 1, H*W) float 0/1
    flip: torch.Tensor  # (N, 1, H*W) 1 - 2 * mask: logits * flip is minus the signed logit
    area: torch.Tensor  # (N, 1) pixels of each object
    alpha_weight: torch.Tensor | None  # (N, 1, H*W) focal alpha on 1s, 1 - alpha on 0s

    @staticmethod
    def of(targets: torch.Tensor, alpha: float = -1.0) -> Targets:
        """targets: (N, 1, H, W) 0/1, float or bool; alpha < 0: no focal weighting."""
        mask = targets.flatten(2).float()
        weight = (1 - alpha) + (2 * alpha - 1) * mask if alpha >= 0 else None
        return Targets(mask, 1 - 2 * mask, mask.sum(-1), weight)


def _focal_pixels(flat_logits: torch.Tensor, t: Targets, gamma: float) -> torch.Tensor:
    """(N, M, H*W) focal loss per pixel.

    With f = logits * flip (minus the signed logit): -log(p_t) = softplus(f) and
    1 - p_t = sigmoid(f), so no cross-entropy blend over the targets and no exp of it.
    """
    flipped = flat_logits * t.flip
    loss = F.softplus(flipped) * torch.sigmoid(flipped) ** gamma
    return loss if t.alpha_weight is None else loss * t.alpha_weight


def _overlaps(flat_logits: torch.Tensor, t: Targets) -> list[torch.Tensor]:
    """Soft intersection and soft area (dice), thresholded intersection and area (IoU) of
    (N, M, H*W) logits with the targets: four (N, M)."""
    prob = flat_logits.sigmoid()
    # 1.0 where logit > 0, else 0.0 (sign: 4x faster than a comparison; float counts are
    # exact below 2**24 pixels)
    pred = flat_logits.detach().sign().clamp_min(0)
    return [(prob * t.mask).sum(-1), prob.sum(-1), (pred * t.mask).sum(-1), pred.sum(-1)]


def _pixel_stats(logits: torch.Tensor, t: Targets, w: LossRecipe) -> torch.Tensor:
    """(N, M, 5) what the losses need from the pixels of (N, M, H, W) logits: the mask loss
    (focal or BCE, mean over pixels) and _overlaps. One pass per step keeps a 128 px step in
    cache; the rest of the loss works on these few numbers, for all steps at once."""
    flat = logits.flatten(2)
    mask = _focal_pixels(flat, t, FOCAL_GAMMA) if w.use_focal else F.softplus(flat * t.flip)
    return torch.stack([mask.mean(-1), *_overlaps(flat, t)], dim=-1)


def _dice(soft_inter, soft_area, area) -> torch.Tensor:
    """1 - (2|P.G| + 1) / (|P| + |G| + 1) with soft P."""
    return 1 - (2 * soft_inter + 1) / (soft_area + area + 1)


def _iou(inter, pred_area, area) -> torch.Tensor:
    return inter / (pred_area + area - inter).clamp(min=1)  # |A u B| = |A| + |B| - |A n B|


def focal_loss(logits: torch.Tensor, targets: torch.Tensor, alpha: float, gamma: float):
    """(N, M, H, W) logits vs 0/1 targets (N, 1, H, W) -> (N, M), mean over pixels
    (RetinaNet focal loss)."""
    return _focal_pixels(logits.flatten(2), Targets.of(targets, alpha), gamma).mean(-1)


def bce_loss(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """(N, M, H, W) logits vs 0/1 targets (N, 1, H, W) -> (N, M) mean cross-entropy."""
    return F.softplus(logits.flatten(2) * Targets.of(targets).flip).mean(-1)


def dice_loss(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """(N, M, H, W) vs (N, 1, H, W) -> (N, M): 1 - (2|P.G| + 1) / (|P| + |G| + 1), soft P."""
    t = Targets.of(targets)
    soft_inter, soft_area, _, _ = _overlaps(logits.flatten(2), t)
    return _dice(soft_inter, soft_area, t.area)


def iou_prediction_loss(logits, targets, pred_ious) -> torch.Tensor:
    """(N, M): |predicted IoU - IoU of the thresholded mask with the (N, 1, H, W) target|."""
    t = Targets.of(targets)
    _, _, inter, pred_area = _overlaps(logits.flatten(2), t)
    return (pred_ious - _iou(inter, pred_area, t.area)).abs()


def _frame_targets(gt: torch.Tensor, w: LossRecipe) -> Targets:
    """Targets of one frame's (N, H, W) ground truth, focal-weighted when the mask loss is."""
    return Targets.of(gt[:, None], FOCAL_ALPHA if w.use_focal else -1.0)


@dataclass
class _StepRecord:
    stats: torch.Tensor  # (N, M, 5) _pixel_stats
    pred_ious: torch.Tensor  # (N, M)
    object_score_logits: torch.Tensor  # (N, 1)
    area: torch.Tensor  # (N, 1) of its frame's ground truth


def _record(logits, pred_ious, object_score_logits, t: Targets, w: LossRecipe) -> _StepRecord:
    return _StepRecord(_pixel_stats(logits, t, w), pred_ious, object_score_logits, t.area)


def _sum_losses(records: list[_StepRecord], w: LossRecipe) -> dict[str, torch.Tensor]:
    """Loss terms of prediction steps, summed over steps and objects; steps with the same
    number of masks M are stacked (K, N, M) and handled at once."""
    parts: dict[str, torch.Tensor] = {}
    for m in dict.fromkeys(r.pred_ious.shape[1] for r in records):
        group = [r for r in records if r.pred_ious.shape[1] == m]
        mask, soft_inter, soft_area, inter, pred_area = torch.stack(
            [r.stats for r in group]
        ).unbind(-1)  # each (K, N, M)
        area = torch.stack([r.area for r in group])  # (K, N, 1)
        present = (area[..., 0] > 0).float()  # (K, N): absent objects only score objectness
        dice = _dice(soft_inter, soft_area, area)
        iou = _iou(inter, pred_area, area)
        # the best of the multimask outputs, by its weighted mask + dice loss
        best = torch.argmin(mask * w.loss_mask + dice * w.loss_dice, dim=-1, keepdim=True)
        pred_ious = torch.stack([r.pred_ious for r in group])
        scores = torch.stack([r.object_score_logits[:, 0] for r in group]).float()
        terms = {
            "mask": (mask.gather(-1, best)[..., 0] * present).sum(),
            "dice": (dice.gather(-1, best)[..., 0] * present).sum(),
            # SAM2.1's training config (supervise_all_iou) trains the IoU head on every mask
            "iou": ((pred_ious - iou).abs().mean(dim=-1) * present).sum(),
            "object_score": F.binary_cross_entropy_with_logits(scores, present, reduction="sum"),
        }
        for k, v in terms.items():
            parts[k] = parts[k] + v if k in parts else v
    return parts


def step_losses(
    multimask_logits: torch.Tensor,
    pred_ious: torch.Tensor,
    object_score_logits: torch.Tensor,
    gt: torch.Tensor,
    w: LossRecipe,
) -> dict[str, torch.Tensor]:
    """Losses of one prediction step, summed over the N objects.

    multimask_logits (N, M, H, W); pred_ious (N, M); object_score_logits (N, 1);
    gt (N, H, W) bool at the logits' resolution.
    """
    t = _frame_targets(gt, w)
    return _sum_losses([_record(multimask_logits, pred_ious, object_score_logits, t, w)], w)


def temporal_consistency(prev_logits: torch.Tensor, logits: torch.Tensor) -> torch.Tensor:
    """Sum over objects of mean |p_t - p_{t-1}| of the final masks (N, 1, H, W)."""
    return (logits.sigmoid() - prev_logits.sigmoid()).abs().flatten(1).mean(-1).sum()


def total_loss(parts: dict[str, torch.Tensor], w: LossRecipe) -> torch.Tensor:
    return (
        parts["mask"] * w.loss_mask
        + parts["dice"] * w.loss_dice
        + parts["iou"] * w.loss_iou
        + parts["object_score"] * w.loss_object_score
        + parts.get("temporal", torch.zeros(())) * w.loss_temporal
    )


def clip_losses(
    frames: list, gt: torch.Tensor, w: LossRecipe, num_objects: float | None = None
) -> dict[str, torch.Tensor]:
    """Sum of step losses over all frames and steps, divided by the number of objects.

    frames: rollout.FrameOutput per frame; gt (T, N, S, S) bool. Under DDP pass the mean
    object count over ranks (as SAM2 does): averaged gradients then equal those of one
    process holding the whole global batch.
    """
    num_objects = max(gt.shape[1] if num_objects is None else num_objects, 1.0)
    records = []
    for i, frame in enumerate(frames):
        t = _frame_targets(gt[i], w)
        records += [
            _record(s.multimask_logits, s.ious, s.object_score_logits, t, w) for s in frame.steps
        ]
    parts = _sum_losses(records, w)
    if w.loss_temporal > 0 and len(frames) > 1:
        pairs = zip(frames[:-1], frames[1:], strict=True)
        parts["temporal"] = sum(temporal_consistency(a.logits, b.logits) for a, b in pairs)
    parts = {k: v / num_objects for k, v in parts.items()}
    parts["total"] = total_loss(parts, w)
    return parts
