"""The base model says when it cannot see: on most objects lost, the measured cause."""

from __future__ import annotations

import numpy as np
import pytest

from sam2_video.evaluate import diagnose


def test_object_width_is_measured_at_the_model_input():
    masks = np.zeros((3, 2, 64, 128), bool)
    masks[0, 0, :4, :4] = masks[1, 0, :4, :4] = True  # 16 px on two frames, absent on one
    masks[:, 1, :8, :8] = True
    # 64 x 128 stored, 256 px input: areas scale by 256^2 / (64 * 128) = 8
    assert diagnose.object_widths(masks, 256) == pytest.approx(np.sqrt([16 * 8, 64 * 8]))


def test_most_objects_lost_gives_the_cause_and_the_fix():
    j = [np.array([0.0, 0.05]), np.array([0.02, 0.9])]
    widths = [np.array([4.0, 5.0]), np.array([4.0, 30.0])]
    message = diagnose.cannot_see(j, widths, stored_side=96, image_size=128, model="tiny")
    assert "loses 75% of the objects" in message
    assert "median 4 px across" in message and "upscaled from 96 px" in message
    assert "20-36 px" in message and "sam2.1_hiera" in message and "shard.max_side" in message


def test_no_warning_when_most_objects_are_tracked():
    j = [np.array([0.0, 0.5, 0.7])]
    assert diagnose.cannot_see(j, [np.ones(3)], 128, 128, "tiny") is None
    assert diagnose.lost_share(j) == pytest.approx(1 / 3)


@pytest.mark.slow
def test_the_tiny_model_cannot_see_four_pixel_objects_and_says_so(tiny_model):
    """The case of a user's data: objects ~4 px at the stored 128 px."""
    import dataclasses

    from sam2_video.data.clips import Clip
    from sam2_video.evaluate import run
    from sam2_video.params import EvaluateParams

    rng = np.random.default_rng(0)
    frames = rng.integers(90, 110, (8, 128, 128, 3), dtype=np.uint8)
    masks = np.zeros((8, 2, 128, 128), bool)
    for t in range(8):
        for o, (y, x) in enumerate(((30, 20 + 6 * t), (90, 100 - 6 * t))):
            masks[t, o, y : y + 4, x : x + 4] = True
            frames[t, y : y + 4, x : x + 4] = (250, 40, 40) if o == 0 else (40, 40, 250)
    clip = Clip("small", frames, masks, (1, 2))
    p = dataclasses.replace(EvaluateParams(prompts=("mask",)), workers=1)
    scores = run.score_models({"base": tiny_model}, [clip], p, 128)
    j = [c["j"] for c in scores["base"]["mask"]]
    widths = [c["width"] for c in scores["base"]["mask"]]
    message = diagnose.cannot_see(j, widths, 128, 128, "tiny")
    assert message is not None and "median 4 px across" in message, j
