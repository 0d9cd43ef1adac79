"""Clips made when a sample is read: windows and pseudo-video drawn from stored sources as a
function of the generator; fixed clips the same for every reader."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from stored import make_images, make_videos, shard_params, store

from sam2_video.data import sampling
from sam2_video.data.clips import choose_at_most
from sam2_video.data.loader import StepBatches, batch_indices
from sam2_video.data.shards import ShardReader


@pytest.fixture(scope="module")
def video_reader(tmp_path_factory: pytest.TempPathFactory):
    root = tmp_path_factory.mktemp("videos")
    return store(
        make_videos(root / "raw", 3, 10),
        root / "split",
        clip_length=4,
        stride=3,
        max_objects=2,
        max_side=64,
    )


@pytest.fixture(scope="module")
def image_reader(tmp_path_factory: pytest.TempPathFactory):
    root = tmp_path_factory.mktemp("images")
    return store(make_images(root / "raw", 3), root / "split", clip_length=4, max_side=64)


def _same(a, b) -> bool:
    return (
        (a.name, a.object_ids) == (b.name, b.object_ids)
        and np.array_equal(a.frames, b.frames)
        and np.array_equal(a.masks, b.masks)
    )


def test_training_windows_start_on_an_object_and_vary_with_the_generator(video_reader) -> None:
    starts = set()
    for seed in range(40):
        clip = video_reader.training_clip(1, np.random.default_rng(seed))
        start = int(clip.name.split("__")[1])
        starts.add(start)
        eligible = video_reader.source(1).eligible[start]
        assert clip.num_frames == 4 and 0 <= start <= 6
        assert set(clip.object_ids) <= set(eligible) and len(clip.object_ids) == min(
            2, len(eligible)
        )
        assert clip.masks[0].any(axis=(1, 2)).all()  # the first frame shows every object
        assert clip.frame_keys == tuple(f"1/{t:05d}" for t in range(start, start + 4))
    assert len(starts) > 3  # random starts, not the fixed windows


def test_training_clips_can_be_shorter_than_the_fixed_ones(video_reader) -> None:
    short = ShardReader(video_reader.split_dir, training_length=2)
    clip = short.training_clip(1, np.random.default_rng(0))
    start = int(clip.name.split("__")[1])
    assert clip.num_frames == 2 and clip.frame_keys == (f"1/{start:05d}", f"1/{start + 1:05d}")
    assert start <= 8  # a 2-frame window may start later than a 4-frame one
    assert _same(short[0], video_reader[0]) and short[0].num_frames == 4  # fixed clips unchanged
    with pytest.raises(ValueError, match="set train.clip_length <= 4"):
        ShardReader(video_reader.split_dir, training_length=5)


def test_pseudo_video_is_new_at_every_visit_and_uncached(image_reader) -> None:
    a, b = (image_reader.training_clip(0, np.random.default_rng(s)) for s in (1, 2))
    assert a.frame_keys is None and a.name == b.name
    assert not np.array_equal(a.frames, b.frames)
    assert _same(a, image_reader.training_clip(0, np.random.default_rng(1)))


def test_fixed_clips_are_the_strided_windows_and_the_same_for_every_reader(
    video_reader, image_reader, tmp_path: Path
) -> None:
    assert video_reader.names == [f"{v}__{s:05d}" for v in range(3) for s in (0, 3, 6)]
    assert image_reader.names == [source.name for source in map(image_reader.source, range(3))]
    for reader in (video_reader, image_reader):
        again = type(reader)(reader.split_dir)  # a fresh reader: another process, run, stage
        for k in range(len(reader)):
            assert _same(reader[k], again[k]) and _same(reader[k], reader[k])


def test_fixed_clip_starts_skip_windows_without_an_eligible_object() -> None:
    class Source:
        name, still = "v", False
        eligible = ((), (3,), (3,), (), (1, 2), (1,), (1,))

    p = shard_params(clip_length=2, stride=2)
    assert sampling.fixed_clip_starts([Source()], p) == [(0, 2), (0, 4)]


class _LateObjects:
    name, still = "v", False
    # object 3 on frames 1-2 only, objects 1 and 2 enter on frame 4, object 5 on the last
    eligible = ((), (3,), (3,), (), (1, 2), (1,), (1, 5))


def test_whole_videos_are_fixed_clips_with_every_object_that_shows() -> None:
    p = shard_params(clip_length=2, val_windows=False)
    assert sampling.fixed_clip_starts([_LateObjects()], p) == [(0, 0)]
    assert sampling.clip_name(_LateObjects(), 0, p) == "v"
    assert sampling.whole_video_length(_LateObjects(), p) == 7
    capped = shard_params(val_windows=False, val_max_frames=4)
    assert sampling.whole_video_length(_LateObjects(), capped) == 4


def test_a_whole_video_whose_objects_show_only_on_its_last_frame_is_not_scored() -> None:
    class LastOnly:
        name, still = "v", False
        eligible = ((), (), (), (4,))

    assert sampling.fixed_clip_starts([LastOnly()], shard_params(val_windows=False)) == []


def test_whole_video_clips_keep_all_frames_and_all_objects(tmp_path: Path) -> None:
    """More objects than max_objects, and the whole video: nothing is sub-sampled."""
    reader = store(
        make_videos(tmp_path / "raw", 2, 9),
        tmp_path / "split",
        clip_length=4,
        max_objects=1,
        max_side=64,
        val_windows=False,
    )
    assert reader.names == [reader.source(i).name for i in range(2)]
    for k in range(2):
        clip, source = reader[k], reader.source(k)
        assert clip.num_frames == 9 and clip.name == source.name
        assert clip.object_ids == tuple(sorted({o for f in source.eligible for o in f}))
        assert len(clip.object_ids) > 1  # max_objects limits windows only


def test_batches_are_a_function_of_seed_step_and_rank(video_reader) -> None:
    def batch(step, rank=0, seed=0):
        return StepBatches(video_reader, 2, 32, seed, rank, world_size=2, steps=10)[step]

    first, again = batch(3), batch(3)
    assert first.names == again.names and first.frames.equal(again.frames)
    assert first.gt.equal(again.gt)
    others = [batch(3, rank=1), batch(4), batch(3, seed=1)]
    assert all(not other.frames.equal(first.frames) for other in others)
    indices = batch_indices(video_reader.num_sources, 2, 3, 0, 0, 2)
    assert [name.split("__")[0] for name in first.names] == [str(i) for i in indices]


def test_fixed_windows_draw_objects_from_the_source_generator_in_window_order(video_reader):
    """As the clip shards of format 2 drew them: one generator per source, window after
    window, so the validation clips are the ones earlier runs scored."""
    p = video_reader.params
    for index in range(video_reader.num_sources):
        source = video_reader.source(index)
        rng = sampling.source_rng(p.seed, index)
        for k, name in enumerate(video_reader.names):
            if name.startswith(f"{index}__"):
                start = int(name.split("__")[1])
                expected = choose_at_most(source.eligible[start], p.max_objects, rng)
                assert video_reader[k].object_ids == tuple(expected)
