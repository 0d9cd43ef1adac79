from __future__ import annotations

import json
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
    pred_b[3, 15:, :] = 9  # an index absent from the ground truth: ignored
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
    assert per_object["1"] == pytest.approx({"j": 1.0, "f": 1.0, "jf": 1.0, "dice": 1.0})
    assert per_object["2"] == pytest.approx({"j": 0.0, "f": 0.0, "jf": 0.0, "dice": 0.0})


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
    assert lines[1].startswith("a ") and lines[2].startswith("b ") and lines[3].startswith("mean")
    assert f"J&F {written['mean']['jf']:.3f}" in lines[-1]


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
    assert "empty       -" in cli.format_score_table(result)


def test_only_empty_ground_truth_is_an_error(tmp_path: Path) -> None:
    empty = np.zeros((3, 20, 24), dtype=np.uint8)
    save_video(tmp_path / "gt", "v", empty)
    save_video(tmp_path / "pred", "v", empty)
    with pytest.raises(ValueError, match="no ground-truth video has an object"):
        score_davis_folders(tmp_path / "gt", tmp_path / "pred")
