"""Frames and masks as SAM2VideoPredictor feeds them to the model."""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

# SAM2VideoPredictor's normalisation (sam2.utils.misc.load_video_frames)
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def resize_frames(frames: np.ndarray, image_size: int) -> torch.Tensor:
    """(T, H, W, 3) uint8 -> (T, 3, S, S) uint8, square-resized.

    The resize is PIL's default, exactly as sam2.utils.misc._load_img_as_tensor does it.
    """
    if frames.shape[1:3] != (image_size, image_size):
        frames = np.stack(
            [np.asarray(Image.fromarray(f).resize((image_size, image_size))) for f in frames]
        )
    return torch.from_numpy(np.ascontiguousarray(frames)).permute(0, 3, 1, 2)


def normalize(frames: torch.Tensor) -> torch.Tensor:
    """(..., 3, S, S) uint8 -> float: /255, then ImageNet mean/std, on frames' device."""
    x = frames.float() / 255.0
    mean = torch.tensor(IMAGENET_MEAN, device=frames.device).view(3, 1, 1)
    std = torch.tensor(IMAGENET_STD, device=frames.device).view(3, 1, 1)
    return (x - mean) / std


def frames_to_model_input(frames: np.ndarray, image_size: int) -> torch.Tensor:
    """(T, H, W, 3) uint8 -> (T, 3, S, S) float model input (SAM2VideoPredictor's)."""
    return normalize(resize_frames(frames, image_size))


def masks_to_model_size(masks: np.ndarray | torch.Tensor, image_size: int) -> torch.Tensor:
    """(T, O, H, W) bool -> (T, O, S, S) bool, as SAM2VideoPredictor.add_new_mask resizes."""
    m = torch.as_tensor(masks).float()
    if m.shape[-2:] != (image_size, image_size):
        m = F.interpolate(
            m, size=(image_size, image_size), mode="bilinear", align_corners=False, antialias=True
        )
    return m >= 0.5
