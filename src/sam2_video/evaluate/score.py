"""Score DAVIS-format predictions against DAVIS-format ground truth (`sam2-video score`).

Both roots hold one folder per video of palette PNGs (`<root>/<video>/<frame>.png`, the
`Annotations/` layout). Matching rules, as davis2017-evaluation's semi-supervised task:

- videos by folder name: every ground-truth video must have a prediction folder; prediction
  folders without ground truth are ignored;
- frames by file name: every frame that is scored (see `metrics.scored_frame_indices`) must
  have a prediction; the prompt frame and the last frame may be missing (they are not
  scored); prediction frames without ground truth are ignored;
- objects by palette index: the objects are the ground-truth indices (any frame: on DAVIS
  the first frame holds them all; YouTube-VOS-style objects may appear later); an object
  missing from the prediction is scored as an empty mask. A prediction index that is no
  ground-truth object gets a warning naming the video and the first frame showing it, and
  is ignored (the toolkit aborts). Void (255) reads as background on both sides.

Means are over all objects of all videos (DAVIS-2017's J-Mean, SAM2's sav_evaluator), with
the toolkit's recall and decay; `write_davis_csv` writes its two CSV tables.
"""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from sam2_video.data.davis import (
    index_maps_to_masks,
    object_indices_of,
    read_annotation_maps,
    read_palette_png,
)
from sam2_video.evaluate import metrics
from sam2_video.files import atomic_path


def _video_names(gt_root: Path, pred_root: Path) -> list[str]:
    for root, role in ((gt_root, "ground-truth"), (pred_root, "prediction")):
        if not root.is_dir():
            raise FileNotFoundError(f"{root}: {role} folder not found")
    names = sorted(p.name for p in gt_root.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not names:
        raise ValueError(f"{gt_root}: no video folders (expected {gt_root}/<video>/<frame>.png)")
    missing = [name for name in names if not (pred_root / name).is_dir()]
    if missing:
        raise FileNotFoundError(
            f"{pred_root}: no prediction folder for video(s) {', '.join(missing)} "
            f"(expected {pred_root}/<video>/<frame>.png for every video in {gt_root})"
        )
    return names


def _read_prediction_maps(
    video: str, pred_dir: Path, frame_names: list[str], gt_shape: tuple[int, int]
) -> np.ndarray:
    """(T, H, W) prediction indices aligned to the gt frames; unscored missing frames empty."""
    scored = set(metrics.scored_frame_indices(len(frame_names)).tolist())
    pred_maps = np.zeros((len(frame_names), *gt_shape), dtype=np.uint8)  # (T, H, W)
    for t, name in enumerate(frame_names):
        path = pred_dir / f"{name}.png"
        if not path.is_file():
            if t in scored:
                raise FileNotFoundError(
                    f"video {video!r}, frame {name!r}: prediction {path} not found "
                    "(every scored frame needs a prediction PNG of the same name)"
                )
            continue
        pred_map = read_palette_png(path)
        if pred_map.shape != gt_shape:
            raise ValueError(
                f"video {video!r}, frame {name!r}: prediction {path} is "
                f"{pred_map.shape[1]}x{pred_map.shape[0]}, ground truth is "
                f"{gt_shape[1]}x{gt_shape[0]}"
            )
        pred_maps[t] = pred_map
    return pred_maps


def spurious_indices(
    video: str, pred_maps: np.ndarray, object_indices: list[int], frame_names: list[str]
) -> list[str]:
    """One warning per prediction index (T, H, W maps) that is no ground-truth object."""
    warnings = []
    for index in sorted(set(np.unique(pred_maps).tolist()) - {0, 255, *object_indices}):
        first = int(np.flatnonzero((pred_maps == index).reshape(len(pred_maps), -1).any(1))[0])
        warnings.append(
            f"video {video!r}, frame {frame_names[first]!r}: prediction index {index} is not "
            f"an object of the ground truth ({object_indices or 'none'}); ignored"
        )
    return warnings


def score_video(gt_dir: Path, pred_dir: Path) -> tuple[dict[str, np.ndarray], list[int], list]:
    """Per-object clip scores of one video (see `metrics.score_clip`), the object indices and
    warnings about prediction indices that are no object."""
    gt_maps, frame_names = read_annotation_maps(gt_dir)  # (T, H, W)
    video = gt_dir.name
    if len(frame_names) < 2:
        raise ValueError(
            f"video {video!r}: {gt_dir} has {len(frame_names)} frame; "
            "at least 2 are needed (the first frame is the prompt and is not scored)"
        )
    pred_maps = _read_prediction_maps(video, pred_dir, frame_names, gt_maps.shape[1:])
    object_indices = object_indices_of(gt_maps)
    warnings = spurious_indices(video, pred_maps, object_indices, frame_names)
    gt_masks = index_maps_to_masks(gt_maps, object_indices)  # (T, O, H, W)
    pred_masks = index_maps_to_masks(pred_maps, object_indices)
    return metrics.score_clip(gt_masks, pred_masks), object_indices, warnings


def _video_entry(clip_scores: dict[str, np.ndarray], object_indices: list[int]) -> dict[str, Any]:
    per_object = {
        str(index): {key: float(clip_scores[key][o]) for key in metrics.SUMMARY_KEYS}
        for o, index in enumerate(object_indices)
    }
    means = {
        key: (float(np.mean(clip_scores[key])) if object_indices else None)
        for key in metrics.METRIC_KEYS
    }
    return {**means, "per_object": per_object}


def score_davis_folders(
    gt_root: Path | str, pred_root: Path | str, progress: bool = False
) -> dict[str, Any]:
    """J, F, J&F, Dice of the predictions for every ground-truth video of `gt_root`.

    Returns {"per_video": {video: {"j", "f", "jf", "dice", "per_object": {index: {...}}}},
    "mean": {key: ... for metrics.SUMMARY_KEYS}, "warnings": [...]}. A video's own entry
    averages its objects; "mean" averages all objects of all videos (DAVIS-2017). A
    ground-truth video without objects gets None scores and adds nothing to the mean.
    """
    gt_root, pred_root = Path(gt_root), Path(pred_root)
    per_video: dict[str, Any] = {}
    per_clip, warnings = [], []
    names = _video_names(gt_root, pred_root)
    with tqdm(names, desc="score", unit="video", disable=not progress) as bar:
        for name in bar:
            clip_scores, object_indices, found = score_video(gt_root / name, pred_root / name)
            per_video[name] = _video_entry(clip_scores, object_indices)
            per_clip.append(clip_scores)
            warnings += found
    if not any(entry["per_object"] for entry in per_video.values()):
        raise ValueError(f"{gt_root}: no ground-truth video has an object (all masks empty)")
    return {"per_video": per_video, "mean": metrics.summarize(per_clip), "warnings": warnings}


# the DAVIS toolkit's CSV columns (davis2017-evaluation, evaluation_method.py)
GLOBAL_COLUMNS = {
    "J&F-Mean": "jf",
    "J-Mean": "j",
    "J-Recall": "j_recall",
    "J-Decay": "j_decay",
    "F-Mean": "f",
    "F-Recall": "f_recall",
    "F-Decay": "f_decay",
}
GLOBAL_CSV, PER_SEQUENCE_CSV = "global_results.csv", "per-sequence_results.csv"


def write_davis_csv(result: dict[str, Any], out_dir: Path | str) -> None:
    """The toolkit's two tables: `global_results.csv` (one row of GLOBAL_COLUMNS) and
    `per-sequence_results.csv` (Sequence, J-Mean, F-Mean; one row per object, named
    `<video>_<index>`), values as its `float_format="%.3f"` writes them."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    mean = result["mean"]
    global_rows = [list(GLOBAL_COLUMNS), [f"{mean[key]:.3f}" for key in GLOBAL_COLUMNS.values()]]
    sequence_rows = [["Sequence", "J-Mean", "F-Mean"]] + [
        [f"{video}_{index}", f"{scores['j']:.3f}", f"{scores['f']:.3f}"]
        for video, entry in result["per_video"].items()
        for index, scores in entry["per_object"].items()
    ]
    for name, rows in ((GLOBAL_CSV, global_rows), (PER_SEQUENCE_CSV, sequence_rows)):
        with atomic_path(out_dir / name) as tmp, open(tmp, "w", newline="") as f:
            csv.writer(f, lineterminator="\n").writerows(rows)
