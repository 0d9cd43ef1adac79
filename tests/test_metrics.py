from __future__ import annotations

import numpy as np
import pytest

from sam2_video.evaluate.metrics import (
    SUMMARY_KEYS,
    boundary_f,
    boundary_tolerance,
    dice,
    dilate_disk,
    object_statistics,
    region_j,
    score_clip,
    scored_frame_indices,
    seg2bmap,
    summarize,
)


def box(shape: tuple[int, int], rows: tuple[int, int], cols: tuple[int, int]) -> np.ndarray:
    """Bool mask with rows[0]..rows[1] x cols[0]..cols[1] set (inclusive bounds)."""
    mask = np.zeros(shape, dtype=bool)
    mask[rows[0] : rows[1] + 1, cols[0] : cols[1] + 1] = True
    return mask


def perimeter(shape: tuple[int, int], rows: tuple[int, int], cols: tuple[int, int]) -> np.ndarray:
    inside = box(shape, (rows[0] + 1, rows[1] - 1), (cols[0] + 1, cols[1] - 1))
    return box(shape, rows, cols) & ~inside


def brute_force_f(gt: np.ndarray, pred: np.ndarray, radius: int) -> float:
    """F-measure straight from the definition: match = a boundary pixel at distance <= radius."""
    gt_pts = np.argwhere(seg2bmap(gt))
    pred_pts = np.argwhere(seg2bmap(pred))
    if len(gt_pts) == 0 and len(pred_pts) == 0:
        return 1.0
    if len(gt_pts) == 0 or len(pred_pts) == 0:
        return 0.0
    sq_dist = ((gt_pts[:, None, :] - pred_pts[None, :, :]) ** 2).sum(-1)  # (Ngt, Npred)
    recall = np.mean(sq_dist.min(axis=1) <= radius**2)
    precision = np.mean(sq_dist.min(axis=0) <= radius**2)
    if precision + recall == 0:
        return 0.0
    return 2 * precision * recall / (precision + recall)


# ---- J and Dice ---------------------------------------------------------------------------


def test_region_j_and_dice_of_overlapping_rectangles() -> None:
    gt = box((10, 10), (0, 3), (0, 3))  # 16 px
    pred = box((10, 10), (2, 5), (0, 3))  # 16 px, overlap rows 2..3 = 8 px
    assert region_j(gt, pred) == pytest.approx(8 / 24)
    assert dice(gt, pred) == pytest.approx(2 * 8 / 32)


def test_region_j_and_dice_empty_conventions() -> None:
    empty = np.zeros((6, 6), dtype=bool)
    some = box((6, 6), (1, 2), (1, 2))
    assert region_j(empty, empty) == 1.0
    assert dice(empty, empty) == 1.0
    assert region_j(some, empty) == 0.0
    assert dice(empty, some) == 0.0


def test_masks_of_different_shape_are_rejected() -> None:
    with pytest.raises(ValueError, match="shape"):
        region_j(np.zeros((4, 4), bool), np.zeros((4, 5), bool))


# ---- boundaries ---------------------------------------------------------------------------


def test_seg2bmap_of_interior_rectangle_is_outline_shifted_towards_origin() -> None:
    # A 3x5 rectangle at rows 4..6, cols 3..7: its boundary is the outline of rows 3..6,
    # cols 2..7 (one pixel up-left outside, last row/col inside): 2*3 + 2*5 = 16 pixels.
    bmap = seg2bmap(box((12, 12), (4, 6), (3, 7)))
    assert bmap.sum() == 16
    np.testing.assert_array_equal(bmap, perimeter((12, 12), (3, 6), (2, 7)))


def test_seg2bmap_ignores_the_image_border() -> None:
    full = np.ones((8, 8), dtype=bool)
    assert seg2bmap(full).sum() == 0
    # A mask filling the bottom-right corner has only its top-left edges as boundary.
    corner = box((8, 8), (5, 7), (5, 7))
    np.testing.assert_array_equal(seg2bmap(corner), perimeter((8, 8), (4, 8), (4, 8)))


def test_dilate_disk_matches_lattice_point_counts() -> None:
    point = np.zeros((15, 15), dtype=bool)
    point[7, 7] = True
    # Lattice points with x^2 + y^2 <= r^2: 1, 5, 13, 29 (a disk, not a square: r=1 has no
    # diagonals).
    assert [dilate_disk(point, r).sum() for r in range(4)] == [1, 5, 13, 29]
    assert not dilate_disk(point, 1)[6, 6]
    corner = np.zeros((6, 6), dtype=bool)
    corner[0, 0] = True
    # Only the quarter-disk inside the image; nothing wraps around.
    assert dilate_disk(corner, 2).sum() == 6
    assert not dilate_disk(corner, 2)[-1].any()


def test_boundary_tolerance_is_davis_fraction_of_diagonal() -> None:
    assert boundary_tolerance((480, 854)) == 8  # ceil(0.008 * 979.65)
    assert boundary_tolerance((512, 512)) == 6  # ceil(0.008 * 724.08)
    assert boundary_tolerance((16, 16)) == 1
    assert boundary_tolerance((16, 16), bound_th=3) == 3


def test_boundary_f_of_square_shifted_by_two_with_tolerance_one() -> None:
    # gt: rows 4..7, cols 4..7 -> boundary = outline of rows 3..7 x cols 3..7 (16 px).
    # pred: shifted right by 2 -> outline of rows 3..7 x cols 5..9.
    # Tolerance ceil(0.008 * 22.6) = 1 (a plus-shaped disk). gt boundary pixels with a pred
    # boundary pixel within it: top row cols 4..7 (4), bottom row cols 4..7 (4), right
    # column rows 4 and 6 (via rows 3 and 7 of pred) (2), left column none -> 10 / 16.
    # By mirror symmetry precision is 10 / 16 too, so F = 10 / 16.
    gt = box((16, 16), (4, 7), (4, 7))
    pred = box((16, 16), (4, 7), (6, 9))
    assert boundary_f(gt, pred) == pytest.approx(10 / 16)
    assert region_j(gt, pred) == pytest.approx(8 / 24)
    assert dice(gt, pred) == pytest.approx(0.5)


def test_boundary_f_of_square_shifted_by_three_with_tolerance_two() -> None:
    # pred outline cols 6..10. Recall: top and bottom rows cols 4..7 (8), right column
    # rows 4..6 at distance 1 from pred's col 6 (3), left column at distance >= 3 (0): 11/16.
    gt = box((16, 16), (4, 7), (4, 7))
    pred = box((16, 16), (4, 7), (7, 10))
    assert boundary_f(gt, pred, bound_th=2) == pytest.approx(11 / 16)
    # With tolerance 3 every boundary pixel matches.
    assert boundary_f(gt, pred, bound_th=3) == pytest.approx(1.0)


def test_boundary_f_empty_conventions() -> None:
    empty = np.zeros((16, 16), dtype=bool)
    square = box((16, 16), (4, 7), (4, 7))
    assert boundary_f(empty, empty) == 1.0
    assert boundary_f(square, empty) == 0.0
    assert boundary_f(empty, square) == 0.0
    assert boundary_f(square, square) == 1.0
    # DAVIS quirk, kept on purpose: a full-frame mask has no boundary, so against an empty
    # prediction both boundaries are empty and F is 1 (J still catches it: 0).
    full = np.ones((16, 16), dtype=bool)
    assert boundary_f(full, empty) == 1.0
    assert region_j(full, empty) == 0.0


def test_boundary_f_equals_distance_definition_on_random_blobs() -> None:
    rng = np.random.default_rng(0)
    for _ in range(20):
        noise = rng.random((2, 30, 40))
        # Smooth-ish blobs: threshold a coarse grid upsampled by 5.
        coarse = rng.random((2, 6, 8)) > 0.5
        gt, pred = np.kron(coarse, np.ones((5, 5), dtype=bool)) ^ (noise < 0.03)
        radius = int(rng.integers(1, 4))
        assert boundary_f(gt, pred, bound_th=radius) == pytest.approx(
            brute_force_f(gt, pred, radius)
        )


# ---- clips -------------------------------------------------------------------------------


def test_scored_frames_follow_davis_semi_supervised_convention() -> None:
    assert scored_frame_indices(5).tolist() == [1, 2, 3]
    assert scored_frame_indices(3).tolist() == [1]
    assert scored_frame_indices(2).tolist() == [1]  # fallback: all but the prompt frame
    assert scored_frame_indices(4, skip_first_last=False).tolist() == [0, 1, 2, 3]
    with pytest.raises(ValueError, match="1 frame"):
        scored_frame_indices(1)


def make_clip() -> tuple[np.ndarray, np.ndarray]:
    """T=5, O=2. Object 0 predicted exactly; object 1 missed (empty pred) on frame 2 only.

    Frames 0 and 4 of the prediction hold the complement of the truth (garbage).
    """
    square = box((16, 16), (4, 7), (4, 7))
    gt = np.broadcast_to(square, (5, 2, 16, 16)).copy()
    gt[:, 1] = np.roll(square, 5, axis=1)
    pred = gt.copy()
    pred[2, 1] = False
    pred[0] = ~gt[0]
    pred[4] = ~gt[4]
    return gt, pred


def test_score_clip_excludes_first_and_last_frame() -> None:
    gt, pred = make_clip()
    scores = score_clip(gt, pred)
    assert set(scores) == set(SUMMARY_KEYS)
    for key in ("j", "f", "jf", "dice"):
        assert scores[key].shape == (2,)
        np.testing.assert_allclose(scores[key], [1.0, 2 / 3])
    # scored frames 1..3; object 1 misses frame 2, J 1, 0, 1: recall 2/3; decay bounds
    # round(linspace(1, 3, 5)) - 1 = 0, 1, 1, 2, 2 (1.5 and 2.5 round up): first bin J 1, 0,
    # last bin J 1 -> 0.5 - 1
    np.testing.assert_allclose(scores["j_recall"], [1.0, 2 / 3])
    np.testing.assert_allclose(scores["j_decay"], [0.0, -0.5])


def test_score_clip_all_frames_sees_the_garbage() -> None:
    gt, pred = make_clip()
    scores = score_clip(gt, pred, skip_first_last=False)
    # Complement of a mask is disjoint from it: J = Dice = 0 on frames 0 and 4.
    np.testing.assert_allclose(scores["j"], [3 / 5, 2 / 5])
    np.testing.assert_allclose(scores["dice"], [3 / 5, 2 / 5])
    np.testing.assert_allclose(scores["jf"], (scores["j"] + scores["f"]) / 2)


def test_score_clip_empty_truth_and_empty_prediction_count_one() -> None:
    gt = np.zeros((4, 1, 8, 8), dtype=bool)
    pred = gt.copy()
    pred[0] = True  # prompt frame: ignored
    scores = score_clip(gt, pred)
    np.testing.assert_allclose(scores["jf"], [1.0])
    np.testing.assert_allclose(scores["dice"], [1.0])


def test_score_clip_two_frames_scores_the_second() -> None:
    gt = np.zeros((2, 1, 8, 8), dtype=bool)
    gt[:, 0, 2:5, 2:5] = True
    pred = gt.copy()
    pred[1] = False  # missed on the only scored frame
    pred[0] = False  # prompt frame: ignored either way
    scores = score_clip(gt, pred)
    np.testing.assert_allclose([scores[k][0] for k in ("j", "f", "jf", "dice")], 0.0)


def test_score_clip_rejects_mismatched_shapes() -> None:
    with pytest.raises(ValueError, match="T, O, H, W"):
        score_clip(np.zeros((3, 1, 4, 4), bool), np.zeros((3, 2, 4, 4), bool))


def _clip_scores(j: list[float], f: list[float], dice: list[float]) -> dict[str, np.ndarray]:
    scores = {"j": np.array(j), "f": np.array(f), "dice": np.array(dice)}
    scores["jf"] = (scores["j"] + scores["f"]) / 2
    for key in ("j_recall", "j_decay", "f_recall", "f_decay"):
        scores[key] = np.zeros(len(j))
    return scores


def test_summarize_averages_all_objects_of_all_clips() -> None:
    """DAVIS-2017's J-Mean: a clip with two objects weighs twice a clip with one."""
    clip_a = _clip_scores(j=[1.0, 0.0], f=[1.0, 0.5], dice=[1.0, 0.0])
    clip_b = _clip_scores(j=[1.0], f=[0.0], dice=[1.0])
    no_objects = {key: np.zeros(0) for key in SUMMARY_KEYS}
    summary = summarize([clip_a, clip_b, no_objects])
    # three objects: J (1 + 0 + 1) / 3, F (1 + 0.5 + 0) / 3, Dice (1 + 0 + 1) / 3.
    # The mean of the clip means would give J 0.75, F 0.375: the order of averaging matters.
    expected = {"j": 2 / 3, "f": 0.5, "jf": 7 / 12, "dice": 2 / 3}
    assert {k: summary[k] for k in expected} == pytest.approx(expected)
    with pytest.raises(ValueError, match="no clip"):
        summarize([no_objects])


def test_summarize_recall_and_decay_over_objects_of_unequal_videos() -> None:
    """Two videos, one object and three objects, of unequal length, scored end to end."""
    one = np.zeros((6, 1, 8, 8), dtype=bool)
    one[:, 0, 2:6, 2:6] = True
    pred_one = one.copy()
    pred_one[4] = False  # scored frames 1..4: J 1, 1, 1, 0
    three = np.zeros((4, 3, 8, 8), dtype=bool)
    three[:, 0, :2, :2] = three[:, 1, 4:, 4:] = three[:, 2, 5:, :3] = True
    pred_three = three.copy()
    pred_three[1, 1] = False  # scored frames 1..2; object 1: J 0, 1; objects 0 and 2: 1, 1
    summary = summarize([score_clip(one, pred_one), score_clip(three, pred_three)])
    # per-object J means 0.75 | 1, 0.5, 1 -> 3.25 / 4; recall (> 0.5) 0.75 | 1, 0.5, 1
    assert summary["j"] == pytest.approx(3.25 / 4)
    assert summary["j_recall"] == pytest.approx(3.25 / 4)
    # decay, 4 frames [1,1,1,0]: bounds round(linspace(1,4,5)) - 1 = 0,1,2,2,3 (2.5 rounds
    # up), first bin frames 0..1 = 1, last bin frames 2..3 = 0.5 -> 0.5. Two frames [0, 1]:
    # bounds 0,0,1,1,1 -> first bin frame 0, last bin frame 1 -> 0 - 1 = -1; [1, 1] -> 0.
    assert summary["j_decay"] == pytest.approx((0.5 + 0 - 1 + 0) / 4)


def test_object_statistics_follow_the_toolkit_definitions() -> None:
    values = np.array([0.9, 0.8, 0.6, 0.4, 0.3, 0.2, 0.1, 0.0])
    mean, recall, decay = object_statistics(values)
    assert mean == pytest.approx(values.mean())
    assert recall == pytest.approx(3 / 8)  # 0.9, 0.8, 0.6 are above 0.5
    # 8 frames: bounds round(linspace(1, 8, 5)) - 1 = 0, 2, 4, 5, 7 (2.75->3, 4.5->5, 6.25->6)
    # first bin frames 0..2, last bin frames 5..7
    assert decay == pytest.approx(np.mean([0.9, 0.8, 0.6]) - np.mean([0.2, 0.1, 0.0]))
    assert object_statistics(np.array([0.7])) == pytest.approx((0.7, 1.0, 0.0))
    with pytest.raises(ValueError, match="non-empty"):
        object_statistics(np.zeros(0))
