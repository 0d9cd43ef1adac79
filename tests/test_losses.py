import math

import pytest
import torch

from sam2_video.model import losses

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
    parts = losses.step_losses(multimask, ious, obj, gt, losses.LossWeights())
    assert parts["mask"].item() < 1e-6  # the good mask was selected for object 0
    assert parts["iou"].item() == pytest.approx(0.0, abs=1e-6)
    expected_obj = 2 * math.log1p(math.exp(-3.0))  # BCE of +-3 logits with right labels
    assert parts["object_score"].item() == pytest.approx(expected_obj, rel=1e-4)


def test_total_loss_uses_weights():
    parts = {k: torch.tensor(1.0) for k in ("mask", "dice", "iou", "object_score")}
    w = losses.LossWeights(mask=20, dice=1, iou=1, object_score=1)
    assert losses.total_loss(parts, w).item() == pytest.approx(23.0)


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
