import math

import pytest
import torch

from sam2_video.model import losses
from sam2_video.model.recipes import SAM21_MOSE_LOSSES

LN2 = math.log(2)


def test_focal_loss_of_one_pixel_matches_hand_value():
    # p = 0.5, CE = ln 2, (1 - p_t)^2 = 0.25, alpha_t = 0.25 for a positive pixel
    logits = torch.zeros(1, 1, 1, 1)
    assert losses.focal_loss(logits, torch.ones(1, 1, 1, 1), 0.25, 2.0).item() == pytest.approx(
        0.25 * 0.25 * LN2
    )
    # a negative pixel gets alpha_t = 0.75
    assert losses.focal_loss(logits, torch.zeros(1, 1, 1, 1), 0.25, 2.0).item() == pytest.approx(
        0.75 * 0.25 * LN2
    )


def test_dice_loss_hand_value():
    logits = torch.zeros(1, 1, 2, 2)  # p = 0.5 everywhere
    targets = torch.tensor([[[[1.0, 1.0], [0.0, 0.0]]]])
    # 1 - (2 * 1 + 1) / (2 + 2 + 1)
    assert losses.dice_loss(logits, targets).item() == pytest.approx(0.4)


def test_iou_prediction_loss_hand_value():
    logits = torch.tensor([[[[1.0, -1.0], [1.0, -1.0]]]])  # predicts left column
    targets = torch.tensor([[[[1.0, 1.0], [0.0, 0.0]]]])  # top row
    loss = losses.iou_prediction_loss(logits, targets, torch.tensor([[0.5]]))
    assert loss.item() == pytest.approx(abs(0.5 - 1 / 3))


def test_step_losses_picks_best_mask_and_ignores_absent_objects():
    gt = torch.zeros(2, 4, 4, dtype=torch.bool)
    gt[0, :2] = True  # object 0 present, object 1 absent
    good = torch.where(gt[0], 10.0, -10.0)
    bad = -good
    multimask = torch.stack([torch.stack([bad, good]), torch.stack([bad, good])])  # (2, 2, 4, 4)
    ious = torch.tensor([[0.0, 1.0], [0.0, 1.0]])
    obj = torch.tensor([[3.0], [-3.0]])
    parts = losses.step_losses(multimask, ious, obj, gt, SAM21_MOSE_LOSSES)
    assert parts["mask"].item() < 1e-6  # the good mask was selected for object 0
    assert parts["iou"].item() == pytest.approx(0.0, abs=1e-6)
    expected_obj = 2 * math.log1p(math.exp(-3.0))  # BCE of +-3 logits with right labels
    assert parts["object_score"].item() == pytest.approx(expected_obj, rel=1e-4)


def test_total_loss_uses_weights():
    parts = {k: torch.tensor(1.0) for k in ("mask", "dice", "iou", "object_score")}
    # SAM2.1's weights, mask/dice/IoU/object score 20/1/1/1
    assert losses.total_loss(parts, SAM21_MOSE_LOSSES).item() == pytest.approx(23.0)


def test_bce_option_differs_from_focal():
    logits, targets = torch.zeros(1, 1, 1, 1), torch.ones(1, 1, 1, 1)
    assert losses.bce_loss(logits, targets).item() == pytest.approx(LN2)


def test_focal_loss_equals_the_textbook_formula_on_random_and_extreme_logits():
    gen = torch.Generator().manual_seed(0)
    logits = torch.randn((2, 3, 16, 16), generator=gen) * 8
    logits[0, 0, 0, :4] = torch.tensor([40.0, -40.0, 1e-3, -1e-3])
    targets = (torch.rand((2, 3, 16, 16), generator=gen) > 0.7).float()
    prob = logits.sigmoid()  # RetinaNet's definition, term by term
    p_t = prob * targets + (1 - prob) * (1 - targets)
    ce = torch.nn.functional.binary_cross_entropy_with_logits(logits, targets, reduction="none")
    alpha_t = 0.25 * targets + 0.75 * (1 - targets)
    expected = (alpha_t * ce * (1 - p_t) ** 2).flatten(2).mean(-1)
    torch.testing.assert_close(losses.focal_loss(logits, targets, 0.25, 2.0), expected)


def _reference_step(logits, ious, obj, gt, w):
    """SAM2's per-step terms written out directly (textbook focal, bool IoU), summed."""
    t = gt[:, None].float().expand_as(logits)
    prob = logits.sigmoid()
    ce = torch.nn.functional.binary_cross_entropy_with_logits(logits, t, reduction="none")
    p_t = prob * t + (1 - prob) * (1 - t)
    alpha_t = 0.25 * t + 0.75 * (1 - t)  # SAM2's focal alpha 0.25, gamma 2
    focal = (alpha_t * ce * (1 - p_t) ** 2).flatten(2).mean(-1)
    dice = 1 - (2 * (prob * t).flatten(2).sum(-1) + 1) / (
        prob.flatten(2).sum(-1) + t.flatten(2).sum(-1) + 1
    )
    pred, g = logits.flatten(2) > 0, t.flatten(2) > 0
    iou = (pred & g).sum(-1) / (pred | g).sum(-1).clamp(min=1)
    best = torch.argmin(focal * w.loss_mask + dice * w.loss_dice, dim=1)
    rows = torch.arange(len(best))
    present = gt.flatten(1).any(1).float()
    return {
        "mask": (focal[rows, best] * present).sum(),
        "dice": (dice[rows, best] * present).sum(),
        "iou": ((ious - iou).abs().mean(1) * present).sum(),
        "object_score": torch.nn.functional.binary_cross_entropy_with_logits(
            obj[:, 0], present, reduction="sum"
        ),
    }


def test_clip_losses_equal_a_direct_per_step_implementation_with_gradients():
    from sam2_video.model.rollout import FrameOutput, Step

    gen = torch.Generator().manual_seed(3)
    n, size, w = 3, 24, SAM21_MOSE_LOSSES
    gt = torch.rand((3, n, size, size), generator=gen) > 0.6
    gt[:, 2] = False  # an absent object: only its object score counts
    masks_per_step = [[3, 1, 1], [1], [1]]  # a clicked frame (3 steps), two tracked frames
    leaves, frames = [], []
    for ms in masks_per_step:
        steps = []
        for m in ms:
            logits = torch.randn((n, m, size, size), generator=gen) * 6
            logits[0, 0, 0, :4] = torch.tensor([60.0, -60.0, 0.0, -1024.0])  # extremes, 0
            parts = (logits, torch.rand((n, m), generator=gen), torch.randn((n, 1), generator=gen))
            leaves += [x.requires_grad_() for x in parts]
            steps.append(Step(*parts))
        frames.append(FrameOutput(steps, steps[-1].multimask_logits[:, :1], None))
    got = losses.clip_losses(frames, gt, w)
    want = dict.fromkeys(("mask", "dice", "iou", "object_score"), 0.0)
    for f, frame in enumerate(frames):
        for s in frame.steps:
            ref = _reference_step(s.multimask_logits, s.ious, s.object_score_logits, gt[f], w)
            want = {k: want[k] + ref[k] / n for k in want}
    for k in want:
        torch.testing.assert_close(got[k], want[k], rtol=1e-5, atol=1e-6, msg=k)
    got_grads = torch.autograd.grad(got["total"], leaves)
    want_grads = torch.autograd.grad(losses.total_loss(want, w), leaves)
    for a, b in zip(got_grads, want_grads, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-7)


def test_one_target_mask_broadcasts_over_the_multimask_outputs():
    gen = torch.Generator().manual_seed(1)
    logits = torch.randn((2, 3, 8, 8), generator=gen) * 3
    one = (torch.rand((2, 1, 8, 8), generator=gen) > 0.5).float()
    every = one.expand_as(logits)
    ious = torch.rand((2, 3), generator=gen)
    torch.testing.assert_close(
        losses.focal_loss(logits, one, 0.25, 2.0), losses.focal_loss(logits, every, 0.25, 2.0)
    )
    torch.testing.assert_close(losses.dice_loss(logits, one), losses.dice_loss(logits, every))
    torch.testing.assert_close(
        losses.iou_prediction_loss(logits, one, ious),
        losses.iou_prediction_loss(logits, every, ious),
    )
    torch.testing.assert_close(losses.bce_loss(logits, one), losses.bce_loss(logits, every))
