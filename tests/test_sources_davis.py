"""DAVIS folders as a source: real JPEG/PNG files written by davis.write_davis_clip, stored
as shards and read back as clips."""

from __future__ import annotations

import shutil
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from stored import store

from sam2_video.data import davis
from sam2_video.data.sources import davis as davis_source

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


def _clips(video, length=3, stride=1, max_objects=5, min_area=0, max_side=10_000, seed=0):
    """The fixed clips of the stored video (`seed`: shard.seed, which draws their objects)."""
    out = video.frame_paths[0].parents[2] / f"shards-{length}-{stride}-{max_objects}-{min_area}"
    params = {"max_objects": max_objects, "min_area": min_area, "max_side": max_side}
    reader = store(
        [video], out / f"{max_side}-{seed}", clip_length=length, stride=stride, seed=seed, **params
    )
    return [reader[i] for i in range(len(reader))]


def _jpeg_pixels(path: Path) -> np.ndarray:
    with Image.open(path) as image:
        return np.asarray(image.convert("RGB"))


# ---------------------------------------------------------------------------- loading


def test_load_davis_videos_pairs_frames_by_stem(tmp_path) -> None:
    videos = davis_source.load_davis_videos(_write_root(tmp_path))
    assert [v.name for v in videos] == ["bear", "cat"]
    bear = videos[0]
    assert bear.num_frames == T and bear.frame_size(0) == (H, W) and not bear.still
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


def test_objects_entering_after_frame_0_are_kept(tmp_path) -> None:
    """YouTube-VOS / MOSE: object 3 is absent on frame 0 and enters on frame 3; it is stored,
    may start a training window there, and training windows from frame 3 track it."""
    (bear, _) = davis_source.load_davis_videos(_write_root(tmp_path))
    assert 3 not in bear.frame_masks(0) and 3 in bear.frame_masks(3)
    reader = store([bear], tmp_path / "shards", clip_length=3, max_objects=5, min_area=0)
    source = reader.source(0)
    assert 3 not in source.eligible[0] and 3 in source.eligible[3]
    np.testing.assert_array_equal(source.masks([3], [3])[0, 0], _video_masks()[3, 2])
    drawn = {reader.training_clip(0, np.random.default_rng(s)).object_ids for s in range(12)}
    assert (1, 3) in drawn and (1, 2) in drawn


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


def test_skips_are_counted(tmp_path) -> None:
    _write_root(tmp_path)
    empty = np.zeros((3, 1, H, W), dtype=bool)
    empty[2, 0] = _rect(0, 0)
    davis.write_davis_clip(tmp_path, "dog", _frames(2, 3), empty, [1])
    cat, dog = davis_source.load_davis_videos(tmp_path, names=["cat", "dog"])
    reader = store([cat, dog], tmp_path / "shards", clip_length=2)
    assert reader.num_sources == 1 and reader.names == ["cat__00000"]
    assert reader.manifest["skips"] == {"no_object_on_first_frame": 1}  # dog: frame 2 only
    reader = store([cat], tmp_path / "short", clip_length=3)
    assert reader.manifest["skips"] == {"video_shorter_than_clip": 1}


def test_frame_masks_are_the_palette_indices(tmp_path) -> None:
    (bear, _) = davis_source.load_davis_videos(_write_root(tmp_path))
    expected = _video_masks()
    for t in range(T):
        masks = bear.frame_masks(t)
        assert sorted(masks) == [k + 1 for k in range(3) if expected[t, k].any()]
        for object_id, mask in masks.items():
            np.testing.assert_array_equal(mask, expected[t, object_id - 1])


def test_corrupt_jpeg_at_clip_time_names_the_file(tmp_path) -> None:
    (bear, _) = davis_source.load_davis_videos(_write_root(tmp_path))
    data = bear.frame_paths[1].read_bytes()
    bear.frame_paths[1].write_bytes(data[: len(data) // 2])
    with pytest.raises(ValueError, match=r"bear/00001\.jpg: cannot read image"):
        _clips(bear)  # when it is stored


def test_parallel_shards_are_byte_identical(tmp_path) -> None:
    videos = davis_source.load_davis_videos(_write_root(tmp_path / "raw"))
    out = {}
    for workers in (1, 2):
        store(
            videos,
            tmp_path / f"w{workers}",
            workers=workers,
            sources_per_shard=1,
            clip_length=2,
            stride=2,
            max_objects=1,
        )
        out[workers] = {
            p.name: p.read_bytes() for p in sorted((tmp_path / f"w{workers}").iterdir())
        }
    assert out[1] == out[2] and len(out[1]) == 3  # a shard per video, and the manifest
    reader = store(videos, tmp_path / "again", clip_length=2, stride=2, max_objects=1)
    assert reader.names == ["bear__00000", "bear__00002", "bear__00004", "cat__00000"]


def test_frames_are_stored_once_as_the_source_files(tmp_path) -> None:
    """Sliding windows share the video's frames: the shard holds each JPEG once, as is."""
    videos = davis_source.load_davis_videos(_write_root(tmp_path / "raw"))
    reader = store(videos, tmp_path / "split", clip_length=3, stride=1)
    assert len(reader) == 4  # bear: 4 windows; cat (2 frames) is skipped
    source_bytes = sum(p.stat().st_size for p in videos[0].frame_paths)
    assert reader.manifest["source_bytes"] == source_bytes
    (shard,) = tmp_path.joinpath("split").glob("*.tar")
    data = shard.read_bytes()
    for path in videos[0].frame_paths:
        assert data.count(path.read_bytes()) == 1
