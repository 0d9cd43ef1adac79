"""Clip: the checks that keep a malformed clip out of the shards."""

from __future__ import annotations

import numpy as np
import pytest

from sam2_video.data.clips import Clip, window_clip, window_starts


def _arrays(t: int = 3) -> tuple[np.ndarray, np.ndarray]:
    return np.zeros((t, 4, 5, 3), np.uint8), np.zeros((t, 2, 4, 5), bool)


def test_source_frames_are_the_clips_consecutive_frame_indices() -> None:
    frames, masks = _arrays()
    assert Clip("a", frames, masks, (1, 2), range(4, 7)).source_frames == range(4, 7)
    assert Clip("a", frames, masks, (1, 2)).source_frames is None  # frames of its own
    for bad in (range(4, 6), range(4, 10, 2), range(-1, 2)):  # too few, gaps, negative
        with pytest.raises(ValueError, match="source_frames .* must be 3 consecutive"):
            Clip("a", frames, masks, (1, 2), bad)


def test_masks_must_match_frames_and_ids() -> None:
    frames, masks = _arrays()
    with pytest.raises(ValueError, match="do not match"):
        Clip("a", frames, masks, (1,))
    with pytest.raises(ValueError, match=r"\(T,H,W,3\) uint8"):
        Clip("a", frames.astype(np.float32), masks, (1, 2))


def test_window_starts_by_hand() -> None:
    assert window_starts(10, 4, 2) == [0, 2, 4, 6]
    assert window_starts(3, 4, 1) == []


def test_window_clip_stacks_masks_and_names_the_window() -> None:
    rgb = np.zeros((2, 4, 5, 3), np.uint8)
    seven = np.zeros((4, 5), bool)
    seven[1, 2] = True
    clip = window_clip("vid", 6, rgb, [{7: seven}, {9: ~seven}], (7, 9))
    assert clip.name == "vid__00006" and clip.source_frames == range(6, 8)
    assert clip.masks.shape == (2, 2, 4, 5) and clip.object_ids == (7, 9)
    # object 9 is absent on frame 0 and object 7 on frame 1: empty masks there
    assert [int(m.sum()) for m in clip.masks.reshape(4, -1)] == [1, 0, 0, 19]
