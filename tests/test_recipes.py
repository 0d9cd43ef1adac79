"""The named recipes (model/recipes.py): what each one promises."""

from __future__ import annotations

import dataclasses

import pytest

from sam2_video.model.recipes import (
    EVAL_PROMPTS,
    SAM21_MOSE_LOSSES,
    SAM21_MOSE_PROMPTS,
    TINY_LOSSES,
    TINY_PRETRAIN_LOSSES,
    TINY_PROMPTS,
)


@pytest.mark.parametrize("recipe", [SAM21_MOSE_PROMPTS, TINY_PROMPTS, EVAL_PROMPTS])
def test_prompt_kind_probabilities_sum_to_one(recipe):
    assert recipe.prob_mask + recipe.prob_points + recipe.prob_box == pytest.approx(1.0)


def test_evaluation_prompts_frame_0_once_with_a_centre_click_or_the_exact_box():
    """vos_inference: one prompt on the first frame, no correction clicks; its point prompt
    is the object's centre, its box the object's own."""
    e = EVAL_PROMPTS
    assert (e.max_cond_frames, e.num_correction_clicks) == (1, 0)
    assert (e.num_pos_points, e.include_center, e.box_jitter) == (1, True, 0.0)


def test_the_tiny_demo_is_tuned_with_the_mask_loss_its_base_was_pretrained_with():
    same = ("use_focal", "loss_mask", "loss_dice", "loss_iou")
    assert [getattr(TINY_LOSSES, k) for k in same] == [
        getattr(TINY_PRETRAIN_LOSSES, k) for k in same
    ]
    assert SAM21_MOSE_LOSSES.use_focal and not TINY_LOSSES.use_focal


def test_recipes_are_frozen_values():
    with pytest.raises(dataclasses.FrozenInstanceError):
        TINY_PROMPTS.prob_mask = 1.0  # type: ignore[misc]
