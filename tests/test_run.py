import numpy as np

from sam2_video.data.davis import read_davis_annotations, write_davis_clip
from sam2_video.evaluate import metrics, run


def test_scored_predictions_equal_what_the_written_pngs_hold(tmp_path):
    t, h, w = 4, 16, 16
    pred = np.zeros((t, 2, h, w), bool)
    pred[:, 0, 2:10, 2:10] = True
    pred[:, 1, 6:14, 6:14] = True  # overlaps object 0: the PNG keeps object 1 there
    flat = run.as_index_maps(pred)
    assert not (flat[:, 0] & flat[:, 1]).any()
    assert flat[:, 1].sum() == pred[:, 1].sum() and flat[:, 0].sum() < pred[:, 0].sum()
    write_davis_clip(tmp_path, "c", np.zeros((t, h, w, 3), np.uint8), pred, (1, 2))
    back, indices, _ = read_davis_annotations(tmp_path / "Annotations" / "c")
    assert indices == [1, 2]
    gt = np.roll(pred, 1, axis=-1)
    for key, value in metrics.score_clip(gt, flat).items():
        np.testing.assert_array_equal(value, metrics.score_clip(gt, back)[key])
