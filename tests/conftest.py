"""Shared fixtures: a tiny SAM2 built from the project's config (random init, seeded)."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from sam2_video.model import build
from sam2_video.params import TrainParams, defaults


@pytest.fixture(scope="session")
def tiny_cfg():
    return build.load_model_config("tiny")


@pytest.fixture
def tiny_model(tiny_cfg):
    torch.manual_seed(0)  # parameter init only; library code never seeds globally
    return build.build_model(tiny_cfg)


def square_masks(t: int, n: int, size: int = 128) -> torch.Tensor:
    """(T, N, S, S) bool: object k is a 24 px square moving right by 4 px per frame."""
    gt = torch.zeros((t, n, size, size), dtype=torch.bool)
    for f in range(t):
        for k in range(n):
            y, x = 20 + 40 * k, 10 + 4 * f
            gt[f, k, y : y + 24, x : x + 24] = True
    return gt


def sam2_train(**overrides) -> TrainParams:
    """The train section with SAM2's own prompt sampling (mask/points/box 0.5/0.25/0.25) and
    loss (focal, 20/1/1/1), each such field spelled out, then `overrides`."""
    sam2 = dataclasses.replace(
        defaults().train,
        prob_mask=0.5,
        prob_points=0.25,
        prob_box=0.25,
        num_pos_points=1,
        include_center=False,
        box_jitter=0.1,
        num_correction_clicks=0,
        max_cond_frames=1,
        loss_mask=20.0,
        loss_dice=1.0,
        loss_iou=1.0,
        loss_object_score=1.0,
        loss_temporal=0.0,
        use_focal=True,
    )
    return dataclasses.replace(sam2, **overrides)
