"""Inference with SAM2VideoPredictor's semantics: prompt frame 0, propagate with memory.

All objects of a clip are tracked together (as the predictor batches them), in eval mode
and without autograd. Point prompts are one click at the object's centre (SAM2's
"center" evaluation clicks), box prompts the exact bounding box. Output masks come from
the low-resolution logits upsampled to the clip's stored size, as the predictor does.
"""

from __future__ import annotations

import numpy as np
import torch

from sam2_video.data.clips import Clip
from sam2_video.model import rollout
from sam2_video.model.transforms import (
    frames_to_model_input,
    logits_to_masks,
    masks_to_model_size,
)

EVAL_PROMPTS = rollout.PromptConfig(
    prob_mask=1.0, prob_points=0.0, prob_box=0.0,
    num_pos_points=1, include_center=True, box_jitter=0.0,
)  # fmt: skip


@torch.inference_mode()
def predict_masks(
    model,
    frames: np.ndarray,
    first_masks: np.ndarray,
    prompt: str,
    image_size: int,
    device: torch.device | str = "cpu",
) -> np.ndarray:
    """Track the objects of `first_masks` through `frames`.

    frames (T, H, W, 3) uint8; first_masks (O, H, W) bool, the objects on frame 0, from
    which the prompt (mask / points / box) is derived. Returns (T, O, H, W) bool.
    """
    t, h, w = frames.shape[:3]
    model.eval()
    images = frames_to_model_input(frames, image_size)[None].to(device)  # (1, T, 3, S, S)
    gt = torch.zeros((t, first_masks.shape[0], image_size, image_size), dtype=torch.bool)
    gt[0] = masks_to_model_size(first_masks[None], image_size)[0]
    owners = torch.zeros(first_masks.shape[0], dtype=torch.long, device=device)
    plan = rollout.Plan(cond_frames=(0,), kind=prompt)
    gen = torch.Generator().manual_seed(0)  # unused by eval prompts; keeps the API uniform
    outs = rollout.track(model, images, gt.to(device), owners, plan, EVAL_PROMPTS, gen)
    masks = [logits_to_masks(o.low_res_logits, h, w).cpu().numpy() for o in outs]
    return np.stack(masks)  # (T, O, H, W)


def predict_clip(model, clip: Clip, prompt: str, image_size: int, device="cpu") -> np.ndarray:
    """(T, O, H, W) bool predictions for a clip, prompted from its frame-0 ground truth."""
    return predict_masks(model, clip.frames, clip.masks[0], prompt, image_size, device)
