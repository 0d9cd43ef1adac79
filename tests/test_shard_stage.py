"""The shard stage's splits: train, tune (held out of train for train-time validation), val."""

from __future__ import annotations

import pytest
from dvc_project import load_stage


def shard_stage():
    return load_stage("shard")


def test_tune_is_the_last_share_of_train_and_val_is_untouched():
    splits = {"train": list(range(20)), "val": ["v1", "v2"]}
    out = shard_stage().hold_out_tune(splits, 0.15)
    assert out["tune"] == [17, 18, 19]  # ceil(20 * 0.15)
    assert out["train"] == list(range(17)) and out["val"] == ["v1", "v2"]


def test_a_small_train_split_holds_out_at_least_one_and_zero_holds_out_nothing():
    stage = shard_stage()
    assert stage.hold_out_tune({"train": [1, 2, 3], "val": [4]}, 0.01)["tune"] == [3]
    assert stage.hold_out_tune({"train": [1, 2, 3], "val": [4]}, 0.0) == {
        "train": [1, 2, 3],
        "val": [4],
    }


def test_too_few_training_videos_to_hold_out_is_an_error_naming_the_key():
    with pytest.raises(ValueError, match="shard.tune_fraction"):
        shard_stage().hold_out_tune({"train": [1], "val": [2]}, 0.5)
