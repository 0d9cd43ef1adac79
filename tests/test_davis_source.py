"""DAVIS folders as a clip source: real JPEG/PNG files written by davis.write_davis_clip."""

from __future__ import annotations

import functools
import shutil
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from sam2_video.data import davis, davis_source, shards
from sam2_video.data.coco import SKIP_NO_OBJECT, SKIP_SHORT_VIDEO

H, W, T = 30, 40, 6


def _rect(top: int, left: int, height: int = 8, width: int = 8) -> np.ndarray:
    mask = np.zeros((H, W), dtype=bool)
    mask[top : top + height, left : left + width] = True
    return mask


def _video_masks() -> np.ndarray:
    """(T, 3, H, W): object 1 everywhere, object 2 leaves after frame 2, object 3 from frame 3."""
    masks = np.zeros((T, 3, H, W), dtype=bool)
    for t in range(T):
        masks[t, 0] = _rect(2, 2 + t)
        if t <= 2:
            masks[t, 1] = _rect(18, 20)
        if t >= 3:
            masks[t, 2] = _rect(10, 28, 4, 4)
    return masks


def _frames(seed: int = 0, t: int = T) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (t, H, W, 3), dtype=np.uint8)


def _write_root(root: Path) -> Path:
    davis.write_davis_clip(root, "bear", _frames(), _video_masks(), [1, 2, 3])
    davis.write_davis_clip(root, "cat", _frames(1, 2), _video_masks()[:2], [1, 2, 3])
    return root


def _clips(video, length=3, stride=1, max_objects=5, min_area=0, max_side=None, seed=0, skips=None):
    rng = np.random.default_rng(seed)
    return list(davis_source.davis_video_clips(
        video, length, stride, max_objects, min_area, max_side, rng, skips,
    ))  # fmt: skip


def _jpeg_pixels(path: Path) -> np.ndarray:
    with Image.open(path) as image:
        return np.asarray(image.convert("RGB"))


# ---------------------------------------------------------------------------- loading


def test_load_davis_videos_pairs_frames_by_stem(tmp_path) -> None:
    videos = davis_source.load_davis_videos(_write_root(tmp_path))
    assert [v.name for v in videos] == ["bear", "cat"]
    bear = videos[0]
    assert bear.num_frames == T and bear.frame_size == (H, W)
    assert [p.name for p in bear.frame_paths] == [f"{t:05d}.jpg" for t in range(T)]
    assert [p.stem for p in bear.annotation_paths] == [p.stem for p in bear.frame_paths]
    only = davis_source.load_davis_videos(tmp_path, names=["cat"])
    assert [v.name for v in only] == ["cat"]


def test_numeric_stems_are_ordered_as_numbers(tmp_path) -> None:
    _write_root(tmp_path)
    for kind, suffix in (("JPEGImages", ".jpg"), ("Annotations", ".png")):
        folder = tmp_path / kind / "bear"
        for t in range(T):
            (folder / f"{t:05d}{suffix}").rename(folder / f"{t * 5}{suffix}")  # 0 5 10 15 20 25
    (bear, _) = davis_source.load_davis_videos(tmp_path)
    assert [p.stem for p in bear.frame_paths] == ["0", "5", "10", "15", "20", "25"]


def test_resolution_level_folder(tmp_path) -> None:
    davis.write_davis_clip(tmp_path / "tmp", "bear", _frames(), _video_masks(), [1, 2, 3])
    for kind in ("JPEGImages", "Annotations"):
        (tmp_path / kind).mkdir()
        shutil.move(tmp_path / "tmp" / kind, tmp_path / kind / "480p")
    (bear,) = davis_source.load_davis_videos(tmp_path, resolution="480p")
    assert bear.num_frames == T
    with pytest.raises(FileNotFoundError, match="resolution='480p'"):
        davis_source.load_davis_videos(tmp_path / "tmp")


def test_frame_without_annotation_names_the_file(tmp_path) -> None:
    _write_root(tmp_path)
    (tmp_path / "Annotations" / "bear" / "00003.png").unlink()
    with pytest.raises(ValueError, match=r"JPEGImages/bear/00003\.jpg: no annotation"):
        davis_source.load_davis_videos(tmp_path)


def test_annotation_without_frame_names_the_file(tmp_path) -> None:
    _write_root(tmp_path)
    (tmp_path / "JPEGImages" / "cat" / "00001.jpg").unlink()
    with pytest.raises(ValueError, match=r"Annotations/cat/00001\.png: annotation without"):
        davis_source.load_davis_videos(tmp_path)


def test_non_palette_png_names_the_file(tmp_path) -> None:
    _write_root(tmp_path)
    path = tmp_path / "Annotations" / "cat" / "00001.png"
    Image.fromarray(np.zeros((H, W), np.uint8)).save(path)  # mode "L"
    with pytest.raises(ValueError, match=r"cat/00001\.png: annotation must be a palette"):
        davis_source.load_davis_videos(tmp_path)


def test_size_mismatch_names_the_file(tmp_path) -> None:
    _write_root(tmp_path)
    path = tmp_path / "JPEGImages" / "bear" / "00002.jpg"
    Image.fromarray(np.zeros((H, W + 2, 3), np.uint8)).save(path)
    with pytest.raises(ValueError, match=r"bear/00002\.jpg: size 42x30"):
        davis_source.load_davis_videos(tmp_path)


def test_missing_folders_are_clear(tmp_path) -> None:
    with pytest.raises(FileNotFoundError, match="JPEGImages: not found"):
        davis_source.load_davis_videos(tmp_path)
    _write_root(tmp_path)
    with pytest.raises(FileNotFoundError, match=r"JPEGImages/dog: folder of frames not found"):
        davis_source.load_davis_videos(tmp_path, names=["dog"])


# ---------------------------------------------------------------------------- clips


def test_clips_follow_first_frame_objects(tmp_path) -> None:
    (bear, _) = davis_source.load_davis_videos(_write_root(tmp_path))
    clips = _clips(bear, length=3, stride=1)
    assert [c.name for c in clips] == [f"bear__{s:05d}" for s in range(4)]
    # windows from frames 0-2: objects 1, 2 (3 appears at frame 3, 2 is gone from frame 3)
    assert [c.object_ids for c in clips] == [(1, 2), (1, 2), (1, 2), (1, 3)]
    expected = _video_masks()
    second = clips[1]  # frames 1..3: object 2 leaves on frame 3 -> empty mask there
    np.testing.assert_array_equal(second.masks[:, 0], expected[1:4, 0])
    np.testing.assert_array_equal(second.masks[:, 1], expected[1:4, 1])
    assert not second.masks[2, 1].any()
    for t in range(3):
        np.testing.assert_array_equal(second.frames[t], _jpeg_pixels(bear.frame_paths[1 + t]))


def test_resize_max_objects_and_min_area(tmp_path) -> None:
    (bear, _) = davis_source.load_davis_videos(_write_root(tmp_path))
    (clip,) = _clips(bear, length=2, stride=10, max_side=20)
    assert clip.frames.shape == (2, 15, 20, 3) and clip.masks.shape == (2, 2, 15, 20)
    want = np.zeros((15, 20), dtype=bool)  # pixel-centre nearest of object 1 on frame 0
    for y in range(15):
        for x in range(20):
            want[y, x] = _rect(2, 2)[
                int(Fraction(2 * y + 1, 30) * H), int(Fraction(2 * x + 1, 40) * W)
            ]
    np.testing.assert_array_equal(clip.masks[0, 0], want)
    picks = {_clips(bear, 2, 10, max_objects=1, seed=s)[0].object_ids for s in range(8)}
    assert picks == {(1,), (2,)}
    (late,) = _clips(bear, length=2, stride=10, min_area=8 * 8)
    assert late.object_ids == (1, 2)
    (clip3,) = [c for c in _clips(bear, 3, 1, min_area=17) if c.name == "bear__00003"]
    assert clip3.object_ids == (1,)  # object 3 has 16 pixels


def test_skips_are_reported(tmp_path) -> None:
    _write_root(tmp_path)
    empty = np.zeros((3, 1, H, W), dtype=bool)
    empty[2, 0] = _rect(0, 0)
    davis.write_davis_clip(tmp_path, "dog", _frames(2, 3), empty, [1])
    cat, dog = davis_source.load_davis_videos(tmp_path, names=["cat", "dog"])
    skips: list[str] = []
    assert _clips(cat, length=3, skips=skips.append) == [] and skips == [SKIP_SHORT_VIDEO]
    skips.clear()
    assert _clips(dog, length=2, skips=skips.append) == []
    assert skips == [SKIP_NO_OBJECT, SKIP_NO_OBJECT]


def test_corrupt_jpeg_at_clip_time_names_the_file(tmp_path) -> None:
    (bear, _) = davis_source.load_davis_videos(_write_root(tmp_path))
    data = bear.frame_paths[1].read_bytes()
    bear.frame_paths[1].write_bytes(data[: len(data) // 2])
    with pytest.raises(ValueError, match=r"bear/00001\.jpg: cannot read image"):
        _clips(bear)


def test_parallel_shards_are_byte_identical(tmp_path) -> None:
    videos = davis_source.load_davis_videos(_write_root(tmp_path / "raw"))
    clip_fn = functools.partial(davis_source.davis_video_clips, clip_length=2, stride=2,
                                max_objects=1, min_area=0, image_size_max_side=None)  # fmt: skip
    out = {}
    for workers in (1, 2):
        shards.build_split(videos, clip_fn, tmp_path / f"w{workers}", seed=1, workers=workers,
                           clips_per_shard=2, params={})  # fmt: skip
        out[workers] = {
            p.name: p.read_bytes() for p in sorted((tmp_path / f"w{workers}").iterdir())
        }
    assert out[1] == out[2]
    assert shards.ShardReader(tmp_path / "w1").names == [
        "bear__00000", "bear__00002", "bear__00004", "cat__00000",
    ]  # fmt: skip


def test_overlapping_windows_share_frames_in_the_shard(tmp_path) -> None:
    """Windows of 3 frames every frame: each frame of a video stored once, and the clips read
    back exactly as davis_video_clips yields them."""
    videos = davis_source.load_davis_videos(_write_root(tmp_path / "raw"))
    clip_fn = functools.partial(davis_source.davis_video_clips, clip_length=3, stride=1,
                                max_objects=5, min_area=0, image_size_max_side=None)  # fmt: skip
    manifest = shards.build_split(videos, clip_fn, tmp_path / "split", seed=0, workers=1,
                                  clips_per_shard=8, params={})  # fmt: skip
    expected = [c for i, v in enumerate(videos) for c in clip_fn(v, rng=shards.source_rng(0, i))]
    reader = shards.ShardReader(tmp_path / "split")
    assert reader.names == [c.name for c in expected]
    for k, clip in enumerate(expected):
        got = reader[k]
        np.testing.assert_array_equal(got.frames, clip.frames)
        np.testing.assert_array_equal(got.masks, clip.masks)
        assert got.object_ids == clip.object_ids
    frame_bytes = expected[0].frames[0].nbytes
    stored = sum(v.num_frames for v in videos if v.num_frames >= 3) * frame_bytes
    ungrouped = shards.write_shards(expected, tmp_path / "ungrouped", clips_per_shard=8)
    saved = sum(r["bytes"] for r in ungrouped) - manifest["total_bytes"]
    repeated = 3 * len(expected) * frame_bytes - stored  # frames ungrouped shards repeat
    assert repeated > 0 and saved >= repeated - 512 * len(expected)  # tar padding per member
