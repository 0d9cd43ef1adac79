"""How a model is prompted and what its training loss weighs: small frozen values.

rollout.py reads a PromptRecipe (how conditioning frames are prompted from ground truth),
losses.py a LossRecipe (the weights of the loss terms); neither sees the run config.
The named instances are written once, here: SAM2.1's MOSE fine-tuning, the tiny demo's
and its base's pretraining, and the evaluation protocol's. params.py maps params.yaml onto
them (`auto` is the model's recipe); a recipe's fields are the params keys of the same name.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

# The models a run can name (params.yaml's `model`, train.model): the project's tiny model and
# SAM2.1's four sizes; SAM2.1's recipe serves every size
SAM21_MODELS = tuple(f"sam2.1_hiera_{n}" for n in ("tiny", "small", "base_plus", "large"))
MODELS = ("tiny", *SAM21_MODELS)


@dataclass(frozen=True)
class PromptRecipe:
    """How conditioning frames are prompted from ground truth (SAM2's training sampler)."""

    prob_mask: float  # probability of a mask prompt on a clip's conditioning frames
    prob_points: float  # of point prompts
    prob_box: float  # of a box prompt
    num_pos_points: int  # positive points per object
    include_center: bool  # the first point at the object's centre (else drawn at random)
    box_jitter: float  # box sides move by up to this fraction of the box size
    num_correction_clicks: int  # clicks from the error region after a point or box prompt
    max_cond_frames: int  # conditioning frames per clip: frame 0, and up to this many in all


@dataclass(frozen=True)
class LossRecipe:
    """Weights of the loss terms (losses.py) and the mask loss's kind."""

    loss_mask: float  # focal or BCE on the best of the multimask outputs
    loss_dice: float
    loss_iou: float  # L1 of the predicted IoU
    loss_object_score: float  # BCE of the object-present score
    loss_temporal: float  # change of the final masks between frames
    use_focal: bool  # focal mask loss (SAM2's), else plain BCE


# SAM2.1's own fine-tuning (sam2/configs/sam2.1_training/sam2.1_hiera_b+_MOSE_finetune.yaml):
# a mask, points or a box 0.5/0.25/0.25, one click drawn from the object, box noise 0.1,
# 7 correction clicks, 1-2 conditioning frames; focal/dice/IoU/object-score 20/1/1/1
SAM21_MOSE_PROMPTS = PromptRecipe(
    prob_mask=0.5,
    prob_points=0.25,
    prob_box=0.25,
    num_pos_points=1,
    include_center=False,
    box_jitter=0.1,
    num_correction_clicks=7,
    max_cond_frames=2,
)
SAM21_MOSE_LOSSES = LossRecipe(
    loss_mask=20.0,
    loss_dice=1.0,
    loss_iou=1.0,
    loss_object_score=1.0,
    loss_temporal=0.0,
    use_focal=True,
)

# The tiny base's pretraining (pretrain.py): from scratch, focal loss (whose mean is dominated
# by background pixels) parks the model in "predict background" for thousands of steps;
# BCE with a heavier dice term gets out of that plateau quickly
TINY_PRETRAIN_LOSSES = dataclasses.replace(SAM21_MOSE_LOSSES, loss_dice=5.0, use_focal=False)

# The tiny demo's fine-tuning: SAM2.1's prompts without correction clicks, one conditioning
# frame; its base's loss (tune a model with the loss it was trained with), with the object
# score weighted 10
TINY_PROMPTS = dataclasses.replace(SAM21_MOSE_PROMPTS, num_correction_clicks=0, max_cond_frames=1)
TINY_LOSSES = dataclasses.replace(TINY_PRETRAIN_LOSSES, loss_object_score=10.0)

# The evaluation protocol (SAM2's tools/vos_inference.py), whatever the training recipe: on
# the first frame only, the mask, or one click at the object's centre, or the exact box; no
# correction clicks, one conditioning frame (as TINY_PROMPTS). The caller names the kind;
# mask is the one drawn if a plan is sampled.
EVAL_PROMPTS = dataclasses.replace(
    TINY_PROMPTS, prob_mask=1.0, prob_points=0.0, prob_box=0.0, include_center=True, box_jitter=0.0
)
