"""Video object segmentation metrics: J (region IoU), F (boundary F-measure), J&F, Dice.

Numpy only, no model code. J and F follow davis2017-evaluation (`db_eval_iou`, `f_measure`,
`_seg2bmap`) exactly, including its edge cases:

- J: both masks empty -> 1.
- F: boundaries come from `seg2bmap` (a pixel is boundary when it differs from its east,
  south or south-east neighbour), so the image border itself is never a boundary: a mask
  covering the whole frame has an empty boundary. Both boundaries empty -> 1, exactly one
  empty -> 0. Tolerance is `ceil(0.008 * image diagonal)` pixels, a disk
  (dx^2 + dy^2 <= r^2, as skimage's `disk`).
- Dice: both masks empty -> 1.

Clip scores use the DAVIS-2017 semi-supervised convention: the first frame (the prompt) and
the last frame are excluded (see `scored_frame_indices` for short clips). Means are taken
over objects: per object over its scored frames, then over all objects of all clips, as
davis2017-evaluation and SAM2's sav_evaluator report them; recall and decay per object as
the toolkit's `db_statistics`, averaged the same way.
"""

from __future__ import annotations

import math

import numpy as np

METRIC_KEYS = ("j", "f", "jf", "dice")
# the DAVIS toolkit's global columns beyond the means
STATISTIC_KEYS = ("j_recall", "j_decay", "f_recall", "f_decay")
SUMMARY_KEYS = METRIC_KEYS + STATISTIC_KEYS
DECAY_BINS = 4
DAVIS_BOUND_TH = 0.008


def _check_pair(gt: np.ndarray, pred: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    gt, pred = np.asarray(gt, dtype=bool), np.asarray(pred, dtype=bool)
    if gt.ndim != 2 or gt.shape != pred.shape:
        raise ValueError(
            f"masks must be two (H, W) arrays of one shape, got {gt.shape} and {pred.shape}"
        )
    return gt, pred


def region_j(gt: np.ndarray, pred: np.ndarray) -> float:
    """Region similarity J: IoU of two (H, W) bool masks; 1.0 when both are empty."""
    gt, pred = _check_pair(gt, pred)
    union = np.count_nonzero(gt | pred)
    if union == 0:
        return 1.0
    return np.count_nonzero(gt & pred) / union


def dice(gt: np.ndarray, pred: np.ndarray) -> float:
    """Dice coefficient 2|A and B| / (|A| + |B|) of two (H, W) bool masks; 1.0 when both empty."""
    gt, pred = _check_pair(gt, pred)
    total = np.count_nonzero(gt) + np.count_nonzero(pred)
    if total == 0:
        return 1.0
    return 2.0 * np.count_nonzero(gt & pred) / total


def seg2bmap(mask: np.ndarray) -> np.ndarray:
    """One-pixel-wide boundary of an (H, W) bool mask, offset half a pixel towards the origin.

    Same as davis2017-evaluation's `_seg2bmap` at full resolution: a pixel is boundary when
    it differs from its east, south or south-east neighbour; the last row compares only
    east, the last column only south, and the bottom-right pixel is never boundary.
    """
    seg = np.asarray(mask, dtype=bool)
    east, south, south_east = (np.zeros_like(seg) for _ in range(3))
    east[:, :-1] = seg[:, 1:]
    south[:-1, :] = seg[1:, :]
    south_east[:-1, :-1] = seg[1:, 1:]
    bmap = (seg ^ east) | (seg ^ south) | (seg ^ south_east)
    bmap[-1, :] = seg[-1, :] ^ east[-1, :]
    bmap[:, -1] = seg[:, -1] ^ south[:, -1]
    bmap[-1, -1] = False
    return bmap


def boundary_tolerance(shape: tuple[int, ...], bound_th: float = DAVIS_BOUND_TH) -> int:
    """Tolerance radius in pixels: `bound_th` itself when >= 1, else ceil(bound_th * diagonal).

    A fractional absolute tolerance (e.g. 2.5) is rounded up, the disk being on integers.
    """
    if bound_th >= 1:
        return math.ceil(bound_th)
    return math.ceil(bound_th * math.hypot(shape[0], shape[1]))


def _dilate_rows(mask: np.ndarray, half_width: int) -> np.ndarray:
    """Dilate each row by a centred segment of 2*half_width+1 pixels (sliding-window sum)."""
    if half_width == 0:
        return mask
    h, w = mask.shape
    padded = np.zeros((h, w + 2 * half_width + 1), dtype=np.int32)
    padded[:, half_width + 1 : half_width + 1 + w] = mask
    cumulative = np.cumsum(padded, axis=1)  # (H, W + 2*half_width + 1), leading zero column
    window = 2 * half_width + 1
    return (cumulative[:, window:] - cumulative[:, :w]) > 0


def dilate_disk(mask: np.ndarray, radius: int) -> np.ndarray:
    """Binary dilation of an (H, W) bool mask by a disk dx^2 + dy^2 <= radius^2, zero outside.

    The disk is a stack of horizontal segments: dilate rows once per distinct segment
    half-width, then OR vertically shifted copies (cost ~ 3 * radius full-image passes).
    """
    mask = np.asarray(mask, dtype=bool)
    h = mask.shape[0]
    out = np.zeros_like(mask)
    rows_by_half_width: dict[int, np.ndarray] = {}
    for dy in range(-radius, radius + 1):
        half_width = math.isqrt(radius * radius - dy * dy)
        if half_width not in rows_by_half_width:
            rows_by_half_width[half_width] = _dilate_rows(mask, half_width)
        rows = rows_by_half_width[half_width]
        # out[y] |= rows[y + dy] for the rows where y + dy is inside the image
        if dy >= 0:
            out[: h - dy] |= rows[dy:]
        else:
            out[-dy:] |= rows[: h + dy]
    return out


def boundary_f(gt: np.ndarray, pred: np.ndarray, bound_th: float = DAVIS_BOUND_TH) -> float:
    """Boundary F-measure of two (H, W) bool masks, as davis2017-evaluation's `f_measure`.

    Precision: share of predicted boundary pixels within the tolerance disk of a ground-truth
    boundary pixel; recall the other way round; F = 2PR / (P + R).
    """
    gt, pred = _check_pair(gt, pred)
    gt_boundary, pred_boundary = seg2bmap(gt), seg2bmap(pred)
    n_gt, n_pred = np.count_nonzero(gt_boundary), np.count_nonzero(pred_boundary)
    if n_gt == 0 and n_pred == 0:
        return 1.0
    if n_gt == 0 or n_pred == 0:
        return 0.0
    radius = boundary_tolerance(gt.shape, bound_th)
    precision = np.count_nonzero(pred_boundary & dilate_disk(gt_boundary, radius)) / n_pred
    recall = np.count_nonzero(gt_boundary & dilate_disk(pred_boundary, radius)) / n_gt
    if precision + recall == 0:
        return 0.0
    return 2.0 * precision * recall / (precision + recall)


def scored_frame_indices(num_frames: int, skip_first_last: bool = True) -> np.ndarray:
    """Indices of the frames a clip is scored on.

    DAVIS-2017 semi-supervised: frames 1 .. T-2 (the prompt frame and the last frame are
    excluded). Clips of 2 frames keep frame 1 (all but the prompt frame) rather than nothing.
    A 1-frame clip has only its prompt frame and cannot be scored.
    """
    if not skip_first_last:
        return np.arange(num_frames)
    if num_frames < 2:
        raise ValueError(
            f"a clip of {num_frames} frame(s) has no frame after the prompt frame to score; "
            "use clips of at least 2 frames (DAVIS scores frames 1..T-2)"
        )
    if num_frames == 2:
        return np.arange(1, 2)
    return np.arange(1, num_frames - 1)


def frame_scores(gt: np.ndarray, pred: np.ndarray) -> dict[str, np.ndarray]:
    """Per-frame, per-object J, F, J&F and Dice of (T, O, H, W) bool masks, each (T, O)."""
    gt, pred = np.asarray(gt, dtype=bool), np.asarray(pred, dtype=bool)
    if gt.ndim != 4 or gt.shape != pred.shape:
        raise ValueError(
            f"gt and pred must be (T, O, H, W) arrays of one shape, got {gt.shape} and {pred.shape}"
        )
    num_frames, num_objects = gt.shape[:2]
    scores = {key: np.zeros((num_frames, num_objects)) for key in ("j", "f", "dice")}
    for t in range(num_frames):
        for o in range(num_objects):
            scores["j"][t, o] = region_j(gt[t, o], pred[t, o])
            scores["f"][t, o] = boundary_f(gt[t, o], pred[t, o])
            scores["dice"][t, o] = dice(gt[t, o], pred[t, o])
    scores["jf"] = (scores["j"] + scores["f"]) / 2
    return scores


def object_statistics(per_frame: np.ndarray) -> tuple[float, float, float]:
    """Mean, recall and decay of one object's per-frame scores, as the DAVIS toolkit's
    `db_statistics`: recall is the share of frames scoring > 0.5; decay is the mean of the
    first of 4 frame bins minus the mean of the last, the bins bounded at
    round(linspace(1, n, 5)) - 1 and each including its right bound (neighbouring bins share
    a frame). The toolkit casts the bounds to uint8, which wraps past 256 frames; here they
    stay integers.
    """
    values = np.asarray(per_frame, dtype=float)
    if values.ndim != 1 or values.size == 0:
        raise ValueError(f"expected a non-empty 1-D array of per-frame scores, got {values.shape}")
    bounds = (np.round(np.linspace(1, values.size, DECAY_BINS + 1) + 1e-10) - 1).astype(int)
    first = values[bounds[0] : bounds[1] + 1]
    last = values[bounds[-2] : bounds[-1] + 1]
    return float(values.mean()), float(np.mean(values > 0.5)), float(first.mean() - last.mean())


def score_clip(
    gt: np.ndarray, pred: np.ndarray, skip_first_last: bool = True
) -> dict[str, np.ndarray]:
    """Per-object scores over the scored frames; each array is (O,).

    gt, pred: (T, O, H, W) bool. Frames chosen by `scored_frame_indices`; only those frames
    are scored, so anything in the excluded frames has no effect. Keys: `j`, `f`, `jf`,
    `dice` (means over frames) and `j_recall`, `j_decay`, `f_recall`, `f_decay`.
    """
    gt, pred = np.asarray(gt), np.asarray(pred)
    if gt.ndim != 4 or gt.shape != pred.shape:
        raise ValueError(
            f"gt and pred must be (T, O, H, W) arrays of one shape, got {gt.shape} and {pred.shape}"
        )
    frames = scored_frame_indices(gt.shape[0], skip_first_last)
    per_frame = frame_scores(gt[frames], pred[frames])  # each (T', O)
    scores = {key: per_frame[key].mean(axis=0) for key in METRIC_KEYS}
    for key in ("j", "f"):
        stats = [object_statistics(per_frame[key][:, o]) for o in range(gt.shape[1])]
        scores[f"{key}_recall"] = np.array([s[1] for s in stats])
        scores[f"{key}_decay"] = np.array([s[2] for s in stats])
    return scores


def summarize(per_clip: list[dict[str, np.ndarray]]) -> dict[str, float]:
    """Mean over all objects of all clips (DAVIS-2017's J-Mean: the mean of the per-object
    means, so a clip with three objects weighs three times a clip with one).

    Keys: SUMMARY_KEYS. Clips without objects add nothing; no object at all is an error, as
    there is nothing to average.
    """
    if not any(np.asarray(clip["j"]).size for clip in per_clip):
        raise ValueError("no clip has an object to score; nothing to summarize")
    return {
        key: float(np.concatenate([np.asarray(clip[key], dtype=float) for clip in per_clip]).mean())
        for key in SUMMARY_KEYS
    }
