import numpy as np
import pytest

from sam2_video.evaluate import metrics, run


def _clip(j: list[float], f: list[float]) -> dict[str, np.ndarray]:
    scores = {"j": np.array(j), "f": np.array(f), "dice": np.array(j)}
    scores["jf"] = (scores["j"] + scores["f"]) / 2
    for key in metrics.STATISTIC_KEYS:
        scores[key] = np.full(len(j), 0.5)
    return scores


def test_headline_metrics_average_all_objects_per_prompt():
    """Clips of 1 and 3 objects: the means weigh objects, not clips (DAVIS-2017)."""
    scores = {
        "finetuned": {
            "mask": [_clip([1.0], [1.0]), _clip([0.0, 0.0, 0.0], [0.0, 0.0, 0.0])],
            "box": [_clip([0.5], [0.5]), _clip([0.5, 0.5, 0.5], [0.5, 0.5, 0.5])],
        },
        "base": {
            "mask": [_clip([0.0], [0.0]), _clip([0.0, 0.0, 0.0], [0.0, 0.0, 0.0])],
            "box": [_clip([0.0], [1.0]), _clip([0.0, 0.0, 0.0], [1.0, 1.0, 1.0])],
        },
    }
    out = run.headline_metrics(scores, ("mask", "box"))
    assert out["jf"] == out["jf_mask"] == 0.25  # one object of four is right (mean of clips: 0.5)
    assert out["jf_base"] == 0.0 and out["jf_gain"] == 0.25
    assert out["jf_box"] == 0.5 and out["jf_base_box"] == 0.5 and out["jf_gain_box"] == 0.0
    assert out["j_recall"] == out["f_decay_base"] == 0.5  # the toolkit's columns, first prompt
    assert list(out) == sorted(out)


def test_per_clip_rows_are_means_over_the_clips_objects():
    scores = {m: {"mask": [_clip([1.0, 0.0], [1.0, 0.0])]} for m in ("base", "finetuned")}
    assert run.per_clip_rows(scores, ["c"], "mask") == [{"clip": "c", "jf_base": 0.5, "jf": 0.5}]


def test_score_models_scores_non_overlapping_predictions(tiny_model):
    """What evaluate scores is what the DAVIS PNGs can hold: one object a pixel."""
    from conftest import square_masks

    from sam2_video.data.clips import Clip
    from sam2_video.params import EvaluateParams

    masks = square_masks(4, 2).numpy()
    masks[:, 1] = masks[:, 0]  # two objects on the same pixels
    frames = np.zeros((4, 128, 128, 3), np.uint8)
    clip = Clip("c", frames, masks, (1, 2))
    seen = []
    p = EvaluateParams(prompts=("mask",))
    run.score_models({"m": tiny_model}, [clip], p, 128, on_prediction=lambda *a: seen.append(a))
    pred = seen[0][3]
    assert pred.shape == masks.shape and not (pred[:, 0] & pred[:, 1]).any()
    assert pred[0, 0].sum() == pytest.approx(masks[0, 0].sum(), rel=0.1)  # frame 0: the prompt


def test_headline_gains_carry_their_interval():
    scores = {
        m: {"mask": [_clip([v, v], [v, v]) for v in vals]}
        for m, vals in (("base", [0.2, 0.4, 0.6]), ("finetuned", [0.3, 0.5, 0.7]))
    }
    out = run.headline_metrics(scores, ("mask",))
    assert out["jf_gain_mask"] == out["jf_gain_mask_lo"] == out["jf_gain_mask_hi"] == 0.1


@pytest.mark.slow
def test_scores_do_not_depend_on_the_number_of_worker_processes(tiny_model):
    """Each clip is scored by one thread, in this process or in spawned ones: the same
    numbers and predictions either way, in clip order."""
    import dataclasses

    from conftest import square_masks

    from sam2_video.data.clips import Clip
    from sam2_video.params import EvaluateParams

    rng = np.random.default_rng(0)
    clips = []
    for i in range(3):
        masks = np.roll(square_masks(5, 2).numpy(), 3 * i, axis=-1)
        frames = rng.integers(0, 255, (5, 128, 128, 3), dtype=np.uint8)
        clips.append(Clip(f"c{i}", frames, masks, (1, 2)))
    results = {}
    for workers in (1, 2):
        seen = []
        p = dataclasses.replace(EvaluateParams(prompts=("mask", "box")), workers=workers)
        scores = run.score_models(
            {"m": tiny_model}, clips, p, 128, on_prediction=lambda *a, seen=seen: seen.append(a)
        )
        results[workers] = (scores, seen)
    (one, seen1), (two, seen2) = results[1], results[2]
    for prompt in ("mask", "box"):
        for a, b in zip(one["m"][prompt], two["m"][prompt], strict=True):
            assert all(np.array_equal(a[k], b[k]) for k in a)
    assert [(a[1], a[2].name) for a in seen1] == [(b[1], b[2].name) for b in seen2]
    assert all(np.array_equal(a[3], b[3]) for a, b in zip(seen1, seen2, strict=True))


def test_evaluation_workers_are_the_cores_on_cpu_and_one_on_a_gpu():
    import os

    assert run.evaluation_workers("auto", "cpu") == len(os.sched_getaffinity(0))
    assert run.evaluation_workers(3, "cpu") == 3
    assert run.evaluation_workers("auto", "cuda:0") == 1


def test_the_davis_protocol_scores_only_objects_on_the_first_frame():
    masks = np.zeros((4, 3, 8, 8), bool)
    masks[0, 0, 2:4, 2:4] = masks[2, 1, 2:4, 2:4] = masks[:, 2, 5:7, 5:7] = True
    assert run.scored_objects(masks, track_later_objects=True).tolist() == [0, 1, 2]
    assert run.scored_objects(masks, track_later_objects=False).tolist() == [0, 2]
