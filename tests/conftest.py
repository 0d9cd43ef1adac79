"""Shared fixtures: a tiny SAM2 built from the project's config (random init, seeded)."""

from __future__ import annotations

import pytest
import torch

from sam2_video.model import build


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
