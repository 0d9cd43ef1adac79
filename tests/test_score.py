from __future__ import annotations

import csv
import json
import re
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from sam2_video import cli
from sam2_video.evaluate import metrics
from sam2_video.evaluate.score import score_davis_folders

# Any palette works for reading: the indices matter, not the colours.
GREY_PALETTE = [v for i in range(256) for v in (i, i, i)]


def save_index_png(path: Path, index_map: np.ndarray) -> None:
    """Palette PNG written with PIL directly (independent of the code under test)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    image = Image.fromarray(index_map.astype(np.uint8))
    image.putpalette(GREY_PALETTE)
    image.save(path)


def save_video(root: Path, video: str, index_maps: np.ndarray) -> None:
    for t, index_map in enumerate(index_maps):
        save_index_png(root / video / f"{t:05d}.png", index_map)


def moving_squares(num_frames: int, shift: int, indices: tuple[int, ...]) -> np.ndarray:
    """(T, 20, 24) index maps: object indices[k] is a 5x5 square moving right by `shift`."""
    maps = np.zeros((num_frames, 20, 24), dtype=np.uint8)
    for t in range(num_frames):
        for k, index in enumerate(indices):
            col = 2 + t * shift
            maps[t, 2 + 8 * k : 7 + 8 * k, col : col + 5] = index
    return maps


def to_masks(maps: np.ndarray, indices: list[int]) -> np.ndarray:
    return np.stack([maps == i for i in indices], axis=1)  # (T, O, H, W)


@pytest.fixture
def folders(tmp_path: Path) -> tuple[Path, Path, dict[str, tuple[np.ndarray, np.ndarray]]]:
    gt_root, pred_root = tmp_path / "gt", tmp_path / "pred"
    gt_a = moving_squares(5, 2, (1, 3))
    pred_a = moving_squares(5, 2, (1, 3))
    pred_a[2] = np.roll(pred_a[2], 1, axis=1)  # off by one pixel on a scored frame
    pred_a[0] = 0  # prompt frame: not scored
    gt_b = moving_squares(4, 1, (2,))
    pred_b = moving_squares(4, 1, (2,))
    pred_b[1:3] = np.roll(pred_b[1:3], 2, axis=1)
    pred_b[3, 15:, :] = 9  # an index absent from the ground truth: a warning, then ignored
    for name, gt, pred in (("a", gt_a, pred_a), ("b", gt_b, pred_b)):
        save_video(gt_root, name, gt)
        save_video(pred_root, name, pred)
    save_video(pred_root, "extra", gt_b)  # prediction without ground truth: ignored
    return gt_root, pred_root, {"a": (gt_a, pred_a), "b": (gt_b, pred_b)}


def expected_scores(maps: dict[str, tuple[np.ndarray, np.ndarray]]) -> dict[str, dict]:
    indices = {"a": [1, 3], "b": [2]}
    return {
        name: metrics.score_clip(to_masks(gt, indices[name]), to_masks(pred, indices[name]))
        for name, (gt, pred) in maps.items()
    }


def test_score_equals_metrics_on_the_arrays(folders) -> None:
    gt_root, pred_root, maps = folders
    result = score_davis_folders(gt_root, pred_root)
    expected = expected_scores(maps)
    assert sorted(result["per_video"]) == ["a", "b"]
    for name, clip in expected.items():
        entry = result["per_video"][name]
        for key in ("j", "f", "jf", "dice"):
            assert entry[key] == pytest.approx(float(np.mean(clip[key])))
    assert sorted(result["per_video"]["a"]["per_object"]) == ["1", "3"]
    assert result["per_video"]["a"]["per_object"]["3"]["j"] == pytest.approx(expected["a"]["j"][1])
    assert result["mean"] == pytest.approx(metrics.summarize(list(expected.values())))
    assert result["mean"]["jf"] < 1.0  # the errors on scored frames are seen


def test_object_missing_from_prediction_scores_as_empty(tmp_path: Path) -> None:
    gt = moving_squares(3, 1, (1, 2))
    pred = gt.copy()
    pred[pred == 2] = 0
    save_video(tmp_path / "gt", "v", gt)
    save_video(tmp_path / "pred", "v", pred)
    per_object = score_davis_folders(tmp_path / "gt", tmp_path / "pred")["per_video"]["v"][
        "per_object"
    ]
    keys = ("j", "f", "jf", "dice", "j_recall", "f_recall")
    assert [per_object["1"][k] for k in keys] == pytest.approx([1.0] * 6)
    assert [per_object["2"][k] for k in keys] == pytest.approx([0.0] * 6)


def test_unscored_frames_may_be_missing_but_scored_ones_may_not(folders) -> None:
    gt_root, pred_root, maps = folders
    (pred_root / "a" / "00000.png").unlink()  # prompt frame
    (pred_root / "a" / "00004.png").unlink()  # last frame
    assert score_davis_folders(gt_root, pred_root)["mean"] == pytest.approx(
        metrics.summarize(list(expected_scores(maps).values()))
    )
    (pred_root / "b" / "00002.png").unlink()
    with pytest.raises(FileNotFoundError, match=r"video 'b', frame '00002'"):
        score_davis_folders(gt_root, pred_root)


def test_size_mismatch_names_video_and_frame(folders) -> None:
    gt_root, pred_root, _ = folders
    save_index_png(pred_root / "a" / "00003.png", np.zeros((10, 10), dtype=np.uint8))
    with pytest.raises(ValueError, match=r"video 'a', frame '00003'.*10x10.*24x20"):
        score_davis_folders(gt_root, pred_root)


def test_video_missing_from_predictions_is_an_error(folders) -> None:
    gt_root, pred_root, _ = folders
    save_video(gt_root, "c", moving_squares(3, 1, (1,)))
    with pytest.raises(FileNotFoundError, match="video.*c"):
        score_davis_folders(gt_root, pred_root)


def test_non_palette_prediction_is_an_error(folders) -> None:
    gt_root, pred_root, _ = folders
    Image.fromarray(np.zeros((20, 24), dtype=np.uint8)).save(pred_root / "b" / "00001.png")
    with pytest.raises(ValueError, match=r"b/00001\.png.*palette"):
        score_davis_folders(gt_root, pred_root)


def test_cli_score_prints_table_and_writes_json(folders, tmp_path: Path, capsys) -> None:
    gt_root, pred_root, _ = folders
    out = tmp_path / "out" / "scores.json"
    assert cli.main(["score", str(gt_root), str(pred_root), "--json", str(out)]) == 0
    written = json.loads(out.read_text())
    assert written == json.loads(json.dumps(score_davis_folders(gt_root, pred_root)))
    stdout = capsys.readouterr().out
    lines = stdout.splitlines()
    assert lines[0].split() == ["video", "J", "F", "J&F", "Dice"]
    assert lines[1].startswith("a ") and lines[2].startswith("b ")
    assert lines[3].startswith("all objects")
    assert "3 object(s), means over objects" in lines[-1]
    assert f"J&F {written['mean']['jf']:.3f}" in lines[-1]
    assert f"J-Decay {written['mean']['j_decay']:.3f}" in lines[-1]


def test_cli_score_error_goes_to_stderr_with_exit_2(folders, tmp_path: Path, capsys) -> None:
    gt_root, _, _ = folders
    out = tmp_path / "scores.json"
    code = cli.main(["score", str(gt_root), str(tmp_path / "missing"), "--json", str(out)])
    assert code == 2
    err = capsys.readouterr().err
    assert err.startswith("sam2-video score: error: ") and "missing" in err
    assert not out.exists()


def test_cli_usage_errors_return_2(capsys) -> None:
    assert cli.main([]) == 2
    assert cli.main(["score"]) == 2
    assert cli.main(["--help"]) == 0
    assert "score" in capsys.readouterr().out


def test_video_without_objects_has_no_score_and_is_left_out_of_the_mean(folders) -> None:
    gt_root, pred_root, maps = folders
    empty = np.zeros((3, 20, 24), dtype=np.uint8)
    save_video(gt_root, "empty", empty)
    save_video(pred_root, "empty", empty + 1)
    result = score_davis_folders(gt_root, pred_root)
    assert result["per_video"]["empty"] == {
        "j": None,
        "f": None,
        "jf": None,
        "dice": None,
        "per_object": {},
    }
    assert result["mean"] == pytest.approx(metrics.summarize(list(expected_scores(maps).values())))
    assert re.search(r"^empty +- +- +- +-$", cli.format_score_table(result), re.MULTILINE)


def test_only_empty_ground_truth_is_an_error(tmp_path: Path) -> None:
    empty = np.zeros((3, 20, 24), dtype=np.uint8)
    save_video(tmp_path / "gt", "v", empty)
    save_video(tmp_path / "pred", "v", empty)
    with pytest.raises(ValueError, match="no ground-truth video has an object"):
        score_davis_folders(tmp_path / "gt", tmp_path / "pred")


def test_prediction_index_that_is_no_object_is_a_warning_then_ignored(folders, capsys) -> None:
    gt_root, pred_root, maps = folders
    result = score_davis_folders(gt_root, pred_root)
    assert result["warnings"] == [
        "video 'b', frame '00003': prediction index 9 is not an object of the ground truth "
        "([2]); ignored"
    ]
    assert result["mean"] == pytest.approx(metrics.summarize(list(expected_scores(maps).values())))
    assert cli.main(["score", str(gt_root), str(pred_root)]) == 0
    err = capsys.readouterr().err.splitlines()
    assert f"sam2-video score: warning: {result['warnings'][0]}" in err


def test_frame_count_mismatch_is_an_error_naming_the_video(folders) -> None:
    gt_root, pred_root, _ = folders
    save_video(gt_root, "a", moving_squares(7, 2, (1, 3)))  # 2 more frames than predicted
    with pytest.raises(FileNotFoundError, match=r"video 'a', frame '00005'"):
        score_davis_folders(gt_root, pred_root)


def test_cli_csv_has_the_toolkit_columns_and_per_object_rows(folders, tmp_path: Path) -> None:
    gt_root, pred_root, _ = folders
    assert cli.main(["score", str(gt_root), str(pred_root), "--csv", str(tmp_path / "c")]) == 0
    result = score_davis_folders(gt_root, pred_root)
    rows = list(csv.reader((tmp_path / "c" / "global_results.csv").open()))
    columns = "J&F-Mean J-Mean J-Recall J-Decay F-Mean F-Recall F-Decay"
    assert rows[0] == columns.split()
    mean = result["mean"]
    keys = ("jf", "j", "j_recall", "j_decay", "f", "f_recall", "f_decay")
    assert rows[1] == [f"{mean[k]:.3f}" for k in keys]
    rows = list(csv.reader((tmp_path / "c" / "per-sequence_results.csv").open()))
    assert rows[0] == ["Sequence", "J-Mean", "F-Mean"]
    assert [r[0] for r in rows[1:]] == ["a_1", "a_3", "b_2"]
    a3 = result["per_video"]["a"]["per_object"]["3"]
    assert rows[2][1:] == [f"{a3['j']:.3f}", f"{a3['f']:.3f}"]


# ---- an independent peer: vos-benchmark (the evaluator Cutie uses) and the DAVIS toolkit's
# published definitions of recall and decay --------------------------------------------------


def _random_shape(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    yy, xx = np.mgrid[:h, :w]
    cy, cx = rng.uniform(0.2, 0.8) * h, rng.uniform(0.2, 0.8) * w
    ry, rx = rng.uniform(3, h / 3), rng.uniform(3, w / 3)
    if rng.random() < 0.5:
        return ((yy - cy) / ry) ** 2 + ((xx - cx) / rx) ** 2 <= 1
    return (abs(yy - cy) <= ry) & (abs(xx - cx) <= rx)


def _perturbed(rng: np.random.Generator, mask: np.ndarray) -> np.ndarray:
    """A prediction of `mask`: exact, shifted, dilated, eroded or missed."""
    kind = rng.integers(5)
    if kind == 1:
        return np.roll(mask, tuple(rng.integers(-4, 5, size=2)), axis=(0, 1))
    if kind in (2, 3):
        grow = kind == 2
        out = mask.copy()
        for axis, step in ((0, 1), (0, -1), (1, 1), (1, -1)):
            shifted = np.roll(mask, step, axis=axis)
            out = out | shifted if grow else out & shifted
        return out
    return np.zeros_like(mask) if kind == 4 else mask


def _random_video(rng: np.random.Generator, num_objects: int) -> tuple[np.ndarray, np.ndarray]:
    """(T, H, W) gt and prediction index maps; every object on frames 0 and 1 (so every
    evaluator sees the same objects), one object absent on some later frame, and a spurious
    prediction index."""
    t, h, w = int(rng.integers(4, 9)), int(rng.integers(30, 50)), int(rng.integers(30, 60))
    gt, pred = np.zeros((2, t, h, w), dtype=np.uint8)
    for k in range(1, num_objects + 1):
        for f in range(t):
            if f >= 2 and rng.random() < 0.15:
                continue  # the object is absent on this frame
            shape = _random_shape(rng, h, w)
            gt[f][shape] = k
            pred[f][_perturbed(rng, shape)] = k
    pred[int(rng.integers(1, t)), :3, :3] = num_objects + 5  # no such object
    return gt, pred


def _toolkit_statistics(per_frame: np.ndarray) -> tuple[float, float, float]:
    """davis2017-evaluation's `db_statistics`, as published (mean, recall, decay)."""
    ids = (np.round(np.linspace(1, len(per_frame), 5) + 1e-10) - 1).astype(np.uint8)
    bins = [per_frame[ids[i] : ids[i + 1] + 1] for i in range(4)]
    return per_frame.mean(), np.mean(per_frame > 0.5), np.mean(bins[0]) - np.mean(bins[3])


def _toolkit_f(gt: np.ndarray, pred: np.ndarray) -> float:
    """The toolkit's `f_measure` with OpenCV's dilation by skimage's disk (as it runs)."""
    import cv2
    from skimage.morphology import disk
    from vos_benchmark.utils import _seg2bmap

    radius = np.ceil(0.008 * np.linalg.norm(gt.shape))
    fg, gb = _seg2bmap(pred).astype(np.uint8), _seg2bmap(gt).astype(np.uint8)
    n_fg, n_gt = fg.sum(), gb.sum()
    if n_fg == 0 or n_gt == 0:
        return float(n_fg == n_gt)
    precision = np.sum(fg * cv2.dilate(gb, disk(radius))) / n_fg
    recall = np.sum(gb * cv2.dilate(fg, disk(radius))) / n_gt
    return 0.0 if precision + recall == 0 else 2 * precision * recall / (precision + recall)


def _toolkit_global(videos: dict[str, tuple[np.ndarray, np.ndarray]]) -> dict[str, float]:
    stats = {"j": [], "f": []}
    for gt, pred in videos.values():
        for k in range(1, int(gt[0].max()) + 1):  # the toolkit's objects: 1..max of frame 0
            g, p = gt[1:-1] == k, pred[1:-1] == k
            inter, union = (g & p).sum((1, 2)), (g | p).sum((1, 2))
            j = np.where(union == 0, 1.0, inter / np.maximum(union, 1))
            f = np.array([_toolkit_f(a, b) for a, b in zip(g, p, strict=True)])
            stats["j"].append(_toolkit_statistics(j))
            stats["f"].append(_toolkit_statistics(f))
    out = {}
    for key, rows in stats.items():
        means = np.array(rows).mean(axis=0)
        out |= {key: means[0], f"{key}_recall": means[1], f"{key}_decay": means[2]}
    return out


# seeds whose mean of per-video means is > 0.002 away from the mean over objects
@pytest.mark.parametrize("seed", [0, 1, 4, 5])
def test_score_agrees_with_vos_benchmark_and_the_toolkit_definitions(tmp_path, seed) -> None:
    from vos_benchmark import benchmark  # a test dependency (pyproject's dev extra)

    rng = np.random.default_rng(seed)
    videos = {f"v{i}": _random_video(rng, int(rng.integers(1, 4))) for i in range(6)}
    for name, (gt, pred) in videos.items():
        save_video(tmp_path / "gt", name, gt)
        save_video(tmp_path / "pred", name, pred)
    result = score_davis_folders(tmp_path / "gt", tmp_path / "pred")
    ours = result["mean"]
    jf, j, f, _ = benchmark.benchmark(
        [str(tmp_path / "gt")], [str(tmp_path / "pred")], num_processes=1, verbose=False
    )
    assert ours["j"] == pytest.approx(j[0] / 100, abs=0.002)
    assert ours["f"] == pytest.approx(f[0] / 100, abs=0.002)
    assert ours["jf"] == pytest.approx(jf[0] / 100, abs=0.002)
    toolkit = _toolkit_global(videos)
    assert {k: ours[k] for k in toolkit} == pytest.approx(toolkit, abs=1e-9)
    per_video = np.mean([entry["jf"] for entry in result["per_video"].values()])
    assert abs(per_video - ours["jf"]) > 0.002, "the set must tell the two averages apart"
