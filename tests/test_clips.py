"""Clip: the checks that keep a malformed clip out of training; window and object choice."""

from __future__ import annotations

import numpy as np
import pytest

from sam2_video.data.clips import Clip, choose_at_most, window_starts


def _arrays(t: int = 3) -> tuple[np.ndarray, np.ndarray]:
    return np.zeros((t, 4, 5, 3), np.uint8), np.zeros((t, 2, 4, 5), bool)


def test_frame_keys_name_each_frame() -> None:
    frames, masks = _arrays()
    keys = ("v/00004", "v/00005", "v/00006")
    assert Clip("a", frames, masks, (1, 2), keys).frame_keys == keys
    assert Clip("a", frames, masks, (1, 2)).frame_keys is None  # frames of its own
    with pytest.raises(ValueError, match="2 frame keys for 3 frames"):
        Clip("a", frames, masks, (1, 2), keys[:2])


def test_masks_must_match_frames_and_ids() -> None:
    frames, masks = _arrays()
    with pytest.raises(ValueError, match="do not match"):
        Clip("a", frames, masks, (1,))
    with pytest.raises(ValueError, match=r"\(T,H,W,3\) uint8"):
        Clip("a", frames.astype(np.float32), masks, (1, 2))


def test_window_starts_by_hand() -> None:
    assert window_starts(10, 4, 2) == [0, 2, 4, 6]
    assert window_starts(3, 4, 1) == []


def test_choose_at_most_keeps_all_or_a_sorted_seeded_subset() -> None:
    assert choose_at_most([9, 3], 3, np.random.default_rng(0)) == [9, 3]
    picks = [choose_at_most([1, 2, 3, 4, 5], 2, np.random.default_rng(s)) for s in range(20)]
    assert all(len(p) == 2 and p == sorted(p) and set(p) <= {1, 2, 3, 4, 5} for p in picks)
    assert len({tuple(p) for p in picks}) > 1  # the generator decides
    assert picks[3] == choose_at_most([1, 2, 3, 4, 5], 2, np.random.default_rng(3))
