"""Shards: tar round trips, byte-identical output, atomic writes, parallel building, reading."""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import io
import json
import multiprocessing
import tarfile
from collections.abc import Callable, Iterator
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from pycocotools import mask as mask_utils

from sam2_video.data import coco, shards
from sam2_video.data.clips import Clip


def _clip(name: str, shape: tuple[int, int, int, int], seed: int) -> Clip:
    t, o, h, w = shape
    rng = np.random.default_rng(seed)
    frames = rng.integers(0, 256, (t, h, w, 3), dtype=np.uint8)
    masks = rng.random((t, o, h, w)) > 0.6
    return Clip(name, frames, masks, tuple(int(i) for i in rng.choice(1000, o, replace=False)))


MEMBERS = ("frames.npy", "masks.npy", "meta.json")  # of a clip that owns its frames
SHAPES = [(2, 1, 9, 13), (3, 2, 8, 8), (1, 3, 5, 17), (2, 0, 4, 4), (4, 2, 6, 7)]


def _clips() -> list[Clip]:
    return [_clip(f"clip_{k}é", shape, k) for k, shape in enumerate(SHAPES)]


def _assert_same_clip(got: Clip, want: Clip) -> None:
    assert got.name == want.name and got.object_ids == want.object_ids
    assert got.frames.dtype == np.uint8 and got.masks.dtype == np.bool_
    np.testing.assert_array_equal(got.frames, want.frames)
    np.testing.assert_array_equal(got.masks, want.masks)


def _write_split(out_dir: Path, clips: list[Clip], per_shard: int = 2) -> dict:
    records = shards.write_shards(clips, out_dir, per_shard)
    return shards.write_manifest(out_dir, records, {"clip_length": 2}, {"short": 1})


def _file_digests(root: Path) -> dict[str, str]:
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


# ---------------------------------------------------------------------------- format


def test_round_trip_through_reader(tmp_path: Path) -> None:
    clips = _clips()
    manifest = _write_split(tmp_path / "split", clips)
    assert [r["num_clips"] for r in manifest["shards"]] == [2, 2, 1]
    assert manifest["num_clips"] == 5 and manifest["skips"] == {"short": 1}
    reader = shards.ShardReader(tmp_path / "split")
    assert len(reader) == 5 and reader.names == [c.name for c in clips]
    for k, clip in enumerate(clips):
        _assert_same_clip(reader[k], clip)
    _assert_same_clip(reader[-1], clips[-1])
    with pytest.raises(IndexError):
        reader[5]
    reader.close()


def test_tar_layout_read_independently(tmp_path: Path) -> None:
    clips = _clips()[:2]
    (record,) = shards.write_shards(clips, tmp_path, clips_per_shard=5)
    path = tmp_path / "shard-00000.tar"
    assert record["sha256"] == hashlib.sha256(path.read_bytes()).hexdigest()
    assert record["bytes"] == path.stat().st_size and record["clips"] == [c.name for c in clips]
    with tarfile.open(path) as tar:
        members = tar.getmembers()
        assert [m.name for m in members] == [
            f"{c.name}/{f}" for c in clips for f in ("frames.npy", "masks.npy", "meta.json")
        ]
        assert {(m.mtime, m.uid, m.gid, m.uname, m.gname, m.mode) for m in members} == {
            (0, 0, 0, "", "", 0o644)
        }
        for k, clip in enumerate(clips):
            frames, masks, meta = (tar.extractfile(m).read() for m in members[3 * k : 3 * k + 3])
            np.testing.assert_array_equal(np.load(io.BytesIO(frames)), clip.frames)
            packed = np.load(io.BytesIO(masks))
            assert packed.shape[-1] == -(-clip.masks.shape[-1] // 8)  # 8 pixels per byte
            unpacked = np.unpackbits(packed, axis=-1)[..., : clip.masks.shape[-1]]
            np.testing.assert_array_equal(unpacked.astype(bool), clip.masks)
            info = json.loads(meta)
            assert info == {"name": clip.name, "object_ids": list(clip.object_ids),
                            "shape": list(clip.masks.shape), "frames": [clip.name, 0]}  # fmt: skip


def _np_save(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, np.ascontiguousarray(array), allow_pickle=False)
    return buffer.getvalue()


def _tarfile_shard(path: Path, clips: list[Clip]) -> bytes:
    """A shard of `clips` as tarfile and np.save write it (the format spec, not the library)."""
    with tarfile.open(path, "w", format=tarfile.PAX_FORMAT, encoding="utf-8") as tar:
        for clip in clips:
            meta = {"name": clip.name, "object_ids": list(clip.object_ids),
                    "shape": list(clip.masks.shape), "frames": [clip.name, 0]}  # fmt: skip
            payloads = [_np_save(clip.frames), _np_save(np.packbits(clip.masks, axis=-1)),
                        json.dumps(meta, sort_keys=True, ensure_ascii=False).encode()]  # fmt: skip
            for member, payload in zip(MEMBERS, payloads, strict=True):
                info = tarfile.TarInfo(f"{clip.name}/{member}")
                info.size, info.mtime, info.mode = len(payload), 0, 0o644
                info.uid, info.gid, info.uname, info.gname = 0, 0, "", ""
                tar.addfile(info, io.BytesIO(payload))
    return path.read_bytes()


def test_shards_are_what_tarfile_and_np_save_write(tmp_path: Path) -> None:
    clips = _clips()
    clips.append(_clip("ü" * 120, (2, 1, 5, 9), 7))  # a long non-ASCII name: pax headers
    strided = _clip("x" * 150, (3, 2, 6, 11), 8)
    shared = np.repeat(strided.frames, 2, axis=0)[::2]  # not contiguous
    shared.flags.writeable = False
    clips.append(Clip(strided.name, shared, np.asfortranarray(strided.masks), strided.object_ids))
    shards.write_shards(clips, tmp_path / "split", clips_per_shard=len(clips))
    written = (tmp_path / "split" / "shard-00000.tar").read_bytes()
    assert written == _tarfile_shard(tmp_path / "reference.tar", clips)


def test_short_ascii_names_get_tarfiles_headers(tmp_path: Path) -> None:
    """ASCII member names of up to 100 characters take a header built by hand (the fast
    path); byte for byte what tarfile writes, on both sides of the 100-character limit."""
    names = ["a", "video_3__00004", "y" * 89, "z" * 90]  # "y"*89 + "/frames.npy": 100 chars
    clips = [_clip(name, (2, 1, 5, 9), k) for k, name in enumerate(names)]
    shards.write_shards(clips, tmp_path / "split", clips_per_shard=len(clips))
    written = (tmp_path / "split" / "shard-00000.tar").read_bytes()
    assert written == _tarfile_shard(tmp_path / "reference.tar", clips)
    for name in ["a/b", "x" * 100, "x" * 101, "é/b", "\x7f"]:
        for size in [0, 1, 8**11 - 1, 8**11]:  # the size field holds 11 octal digits
            info = tarfile.TarInfo(name)
            info.size, info.mtime, info.mode = size, 0, 0o644
            info.uid, info.gid, info.uname, info.gname = 0, 0, "", ""
            expected = info.tobuf(tarfile.PAX_FORMAT, "utf-8", "surrogateescape")
            assert shards._member_header(name, size) == expected, (name, size)


def _numbered_clips(
    source: int, rng: np.random.Generator, on_skip: Callable[[str], None]
) -> Iterator[Clip]:
    """`source` random clips (picklable, for worker processes); no clip counts as a skip."""
    if source == 0:
        on_skip("empty")
    for k in range(source):
        shape = (2, int(rng.integers(0, 3)), int(rng.integers(3, 9)), int(rng.integers(3, 20)))
        yield _clip(f"s{source}_{k}_{rng.integers(1000)}", shape, int(rng.integers(1000)))


@pytest.mark.slow
def test_workers_reuse_spool_files_without_mixing_sources(tmp_path: Path) -> None:
    sources = [5, 1, 0, 2, 1, 3, 4, 1, 2]  # later sources are shorter than earlier spools
    outputs = {}
    for workers in (1, 2):
        outputs[workers] = shards.build_split(
            sources, _numbered_clips, tmp_path / f"w{workers}", seed=3, workers=workers,
            clips_per_shard=4, params={},
        )  # fmt: skip
    assert outputs[1] == outputs[2] and outputs[1]["num_clips"] == sum(sources)
    assert outputs[1]["skips"] == {"empty": 1}
    assert _file_digests(tmp_path / "w1") == _file_digests(tmp_path / "w2")
    assert len(shards.ShardReader(tmp_path / "w2")) == sum(sources)


def test_identical_inputs_give_identical_bytes(tmp_path: Path) -> None:
    _write_split(tmp_path / "a", _clips())
    _write_split(tmp_path / "b", _clips())
    assert _file_digests(tmp_path / "a") == _file_digests(tmp_path / "b")
    changed = _clips()
    changed[3] = _clip(changed[3].name, SHAPES[3], seed=99)
    _write_split(tmp_path / "c", changed)
    assert _file_digests(tmp_path / "a") != _file_digests(tmp_path / "c")


def test_duplicate_clip_names_rejected(tmp_path: Path) -> None:
    clips = [_clip("same", SHAPES[0], 0), _clip("same", SHAPES[1], 1)]
    with pytest.raises(ValueError, match="'same' occurs twice"):
        shards.write_shards(clips, tmp_path, 4)


# ---------------------------------------------------------------------------- atomic writes


def _clips_then_crash(clips: list[Clip], after: int) -> Iterator[Clip]:
    yield from clips[:after]
    raise RuntimeError("killed mid-write")


def test_crash_mid_write_leaves_nothing_that_looks_complete(tmp_path: Path) -> None:
    _write_split(tmp_path / "clean", _clips())
    out = tmp_path / "split"
    with pytest.raises(RuntimeError, match="killed"):
        shards.write_shards(_clips_then_crash(_clips(), after=3), out, clips_per_shard=2)
    # shard 0 was finished (and equals a clean run's); shard 1 was cut: no file, no manifest
    assert sorted(p.name for p in out.iterdir()) == ["shard-00000.tar"]
    assert (
        _file_digests(out)["shard-00000.tar"]
        == _file_digests(tmp_path / "clean")["shard-00000.tar"]
    )
    with pytest.raises(FileNotFoundError, match="run the shard stage"):
        shards.ShardReader(out)


def test_rewrite_marks_the_directory_incomplete_first(tmp_path: Path) -> None:
    out = tmp_path / "split"
    _write_split(out, _clips())
    shards.ShardReader(out)
    with pytest.raises(RuntimeError, match="killed"):
        shards.write_shards(_clips_then_crash(_clips(), after=1), out, clips_per_shard=2)
    assert not (out / shards.MANIFEST).exists()
    with pytest.raises(FileNotFoundError, match="run the shard stage"):
        shards.ShardReader(out)
    _write_split(out, _clips()[:2])  # a smaller rewrite drops the old, now stale shards
    assert sorted(p.name for p in out.iterdir()) == ["manifest.json", "shard-00000.tar"]
    assert len(shards.ShardReader(out)) == 2


def test_reader_errors(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="run the shard stage"):
        shards.ShardReader(tmp_path / "nothing")
    _write_split(tmp_path / "split", _clips())
    shard = tmp_path / "split" / "shard-00001.tar"
    shard.write_bytes(shard.read_bytes()[:-1024])
    with pytest.raises(ValueError, match="shard-00001.tar: does not match manifest.json"):
        shards.ShardReader(tmp_path / "split")


# ---------------------------------------------------------------------------- parallel build


def _box_rle(box: tuple[slice, slice]) -> dict:
    mask = np.zeros((20, 30), np.uint8, order="F")
    mask[box] = 1
    return {"size": [20, 30], "counts": mask_utils.encode(mask)["counts"].decode()}


def _write_coco(root: Path, num_videos: int, missing_frame: int | None = None) -> Path:
    """Videos of 3 frames (20x30 PNG), 3 tracks on every frame; returns the JSON path."""
    rng = np.random.default_rng(5)
    images, annotations = [], []
    for v in range(num_videos):
        for t in range(3):
            image_id = 10 * v + t
            path = root / "images" / f"{v}_{t}.png"
            path.parent.mkdir(parents=True, exist_ok=True)
            if image_id != missing_frame:
                Image.fromarray(rng.integers(0, 256, (20, 30, 3), dtype=np.uint8)).save(path)
            images.append({"id": image_id, "file_name": path.name, "height": 20, "width": 30,
                           "video_id": v, "order_in_video": t})  # fmt: skip
            for track in range(3):
                box = (
                    slice(2 + 5 * track, 6 + 5 * track),
                    slice(3 + t + 7 * track, 9 + t + 7 * track),
                )
                segmentation = _box_rle(box)
                annotations.append({"id": len(annotations) + 1, "image_id": image_id,
                                    "category_id": 1, "track_id": 100 * v + track,
                                    "segmentation": segmentation})  # fmt: skip
    data = {"images": images, "annotations": annotations, "categories": [{"id": 1}]}
    (root / "ann.json").write_text(json.dumps(data))
    return root / "ann.json"


CLIP_PARAMS = {"clip_length": 2, "stride": 1, "max_objects": 1, "min_area": 1,
               "image_size_max_side": 24}  # fmt: skip


def _build(root: Path, out: Path, workers: int, seed: int = 0, videos: int = 5) -> dict:
    ann_path = _write_coco(root, videos) if not (root / "ann.json").exists() else root / "ann.json"
    sources = coco.load_coco_videos(ann_path, root / "images")
    clip_fn = functools.partial(coco.video_clips, **CLIP_PARAMS)
    return shards.build_split(sources, clip_fn, out, seed=seed, workers=workers,
                              clips_per_shard=3, params=CLIP_PARAMS)  # fmt: skip


@pytest.mark.slow
def test_build_split_is_identical_for_any_worker_count(tmp_path: Path) -> None:
    manifest = _build(tmp_path, tmp_path / "w1", workers=1)
    _build(tmp_path, tmp_path / "w2", workers=2)
    # a video's 2 clips share a frame: one group of 2 per shard of at most 3 clips
    assert manifest["num_clips"] == 10 and manifest["num_shards"] == 5
    assert manifest["params"] == CLIP_PARAMS | {"seed": 0, "clips_per_shard": 3}
    assert _file_digests(tmp_path / "w1") == _file_digests(tmp_path / "w2")
    reader = shards.ShardReader(tmp_path / "w2")
    assert all(reader[k].num_objects == 1 for k in range(len(reader)))
    # the seed reaches object choice: another seed picks other tracks somewhere
    _build(tmp_path, tmp_path / "seed1", workers=1, seed=1)
    assert _file_digests(tmp_path / "w1") != _file_digests(tmp_path / "seed1")
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".tmp")]


@pytest.mark.slow
@pytest.mark.parametrize("workers", [1, 2])
def test_failed_build_keeps_the_previous_split(tmp_path: Path, workers: int) -> None:
    out = tmp_path / "split"
    _build(tmp_path / "good", out, workers=1)
    before = _file_digests(out)
    bad_root = tmp_path / "bad"
    _write_coco(bad_root, 5, missing_frame=31)  # video 3, frame 1
    with pytest.raises(ValueError, match="3_1.png: image file not found"):
        _build(bad_root, out, workers=workers)
    assert _file_digests(out) == before
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".tmp")]


def test_skips_are_counted_in_the_manifest(tmp_path: Path) -> None:
    ann_path = _write_coco(tmp_path, 2)
    videos = coco.load_coco_videos(ann_path, tmp_path / "images")
    params = CLIP_PARAMS | {"clip_length": 4}  # longer than the 3-frame videos
    clip_fn = functools.partial(coco.video_clips, **params)
    manifest = shards.build_split(videos, clip_fn, tmp_path / "out", seed=0, workers=1,
                                  clips_per_shard=3, params=params)  # fmt: skip
    assert manifest["num_clips"] == 0 and manifest["skips"] == {coco.SKIP_SHORT_VIDEO: 2}
    assert len(shards.ShardReader(tmp_path / "out")) == 0


# ---------------------------------------------------------------------------- worker processes


def _clip_digest(reader: shards.ShardReader, index: int) -> str:
    clip = reader[index]
    return hashlib.sha256(clip.frames.tobytes() + np.packbits(clip.masks).tobytes()).hexdigest()


def _check_in_child(reader: shards.ShardReader, expected: list[str]) -> None:
    assert [_clip_digest(reader, k) for k in range(len(reader))] == expected


@pytest.mark.slow
def test_reader_works_in_forked_and_spawned_workers(tmp_path: Path) -> None:
    _write_split(tmp_path / "split", _clips())
    reader = shards.ShardReader(tmp_path / "split")
    expected = [_clip_digest(reader, k) for k in range(len(reader))]  # parent opens handles
    child = multiprocessing.get_context("fork").Process(
        target=_check_in_child, args=(reader, expected)
    )
    child.start()
    child.join()
    assert child.exitcode == 0
    spawn = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(2, mp_context=spawn) as pool:
        got = list(pool.map(functools.partial(_clip_digest, reader), range(len(reader))))
    assert got == expected
    assert [_clip_digest(reader, k) for k in range(len(reader))] == expected  # parent still reads


def test_lazy_source_rng_draws_what_source_rng_draws():
    lazy, eager = shards.LazySourceRng(7, 3), shards.source_rng(7, 3)
    assert lazy._rng is None  # nothing made until a draw
    assert lazy.choice(10, size=4, replace=False).tolist() == eager.choice(
        10, size=4, replace=False).tolist()  # fmt: skip
    assert lazy.random() == eager.random()  # the same generator, state carried on


# ---------------------------------------------------------------------------- frame groups


def _window_video(frames: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """A random video: (N, 6, 7, 3) frames, (N, 2, 6, 7) masks."""
    rng = np.random.default_rng(seed)
    video = rng.integers(0, 256, (frames, 6, 7, 3), dtype=np.uint8)
    return video, rng.random((frames, 2, 6, 7)) > 0.5


def _window_clips(name: str, frames: int, length: int, stride: int, seed: int = 0) -> list[Clip]:
    """Sliding windows over one random video, each with its source_frames (as coco's)."""
    video, masks = _window_video(frames, seed)
    starts = range(0, frames - length + 1, stride)
    return [Clip(f"{name}__{s:05d}", video[s : s + length], masks[s : s + length], (1, 2),
                 range(s, s + length)) for s in starts]  # fmt: skip


def _window_source(source: tuple, rng: np.random.Generator, on_skip: Callable) -> list[Clip]:
    """clip_fn of (name, frames, length, stride) sources, or of singleton clip shapes."""
    return (
        _window_clips(*source)
        if isinstance(source[0], str)
        else [_clip("own_" + "x".join(map(str, source)), source, 1)]
    )


def _members(split: Path, shard: str = "shard-00000.tar") -> dict[str, bytes]:
    with tarfile.open(split / shard) as tar:
        return {m.name: tar.extractfile(m).read() for m in tar.getmembers()}


def test_overlapping_windows_store_each_frame_once(tmp_path: Path) -> None:
    sources = [("a", 10, 4, 2), ("b", 9, 3, 3)]  # a: 4 windows overlapping by 2; b: apart
    manifest = shards.build_split(sources, _window_source, tmp_path / "split", seed=0,
                                  workers=1, clips_per_shard=8, params={})  # fmt: skip
    a, b = _window_clips(*sources[0]), _window_clips(*sources[1])
    members = _members(tmp_path / "split")
    owners = [name for name in members if name.endswith("/frames.npy")]
    assert owners == ["a__00000/frames.npy"] + [f"{c.name}/frames.npy" for c in b]
    video, _ = _window_video(10)  # frames 0..9, once each
    np.testing.assert_array_equal(np.load(io.BytesIO(members[owners[0]])), video)
    rows = [json.loads(members[f"{c.name}/meta.json"])["frames"] for c in a]
    assert rows == [["a__00000", 0], ["a__00000", 2], ["a__00000", 4], ["a__00000", 6]]
    reader = shards.ShardReader(tmp_path / "split")
    assert reader.names == [c.name for c in a + b] and manifest["num_clips"] == 7
    for k, clip in enumerate(a + b):
        _assert_same_clip(reader[k], clip)
    ungrouped = shards.write_shards(a + b, tmp_path / "ungrouped", clips_per_shard=8)
    frame_bytes = 6 * 7 * 3
    assert ungrouped[0]["bytes"] - manifest["total_bytes"] >= (16 - 10) * frame_bytes


def test_group_limits_and_shard_packing(tmp_path: Path, monkeypatch) -> None:
    def build(out: str, clips_per_shard: int, sources: list) -> dict:
        return shards.build_split(sources, _window_source, tmp_path / out, seed=0, workers=1,
                                  clips_per_shard=clips_per_shard, params={})  # fmt: skip

    a = _window_clips("a", 10, 4, 2)
    # at most clips_per_shard clips a group: windows 0, 2, 4 | 6 (which stores 6..9 again)
    manifest = build("by_clips", 3, [("a", 10, 4, 2)])
    assert [s["clips"] for s in manifest["shards"]] == [[c.name for c in a[:3]], [a[3].name]]
    assert list(_members(tmp_path / "by_clips", "shard-00001.tar")) == [
        f"a__00006/{m}" for m in MEMBERS
    ]
    # at most GROUP_BYTES a group: frames of 126 bytes, packed masks of 48 bytes a clip;
    # window 0 holds 4 * 126 + 48 = 552, each later one adds 2 * 126 + 48 = 300
    monkeypatch.setattr(shards, "GROUP_BYTES", 900)  # so 0, 2 (852) | 4, 6 (852)
    build("by_bytes", 8, [("a", 10, 4, 2)])
    owners = [n for n in _members(tmp_path / "by_bytes") if n.endswith("frames.npy")]
    assert owners == ["a__00000/frames.npy", "a__00004/frames.npy"]
    # a group is never split: 3 single clips, then a group of 2 that does not fit in 4
    manifest = build("packing", 4, [(2, 1, 6, 7), (2, 1, 6, 8), (2, 1, 6, 9), ("a", 6, 4, 2)])
    assert [s["num_clips"] for s in manifest["shards"]] == [3, 2]
    short_a = _window_clips("a", 6, 4, 2)
    for split, clips in (("by_clips", a), ("by_bytes", a), ("packing", short_a)):
        reader = shards.ShardReader(tmp_path / split)
        got = {name: reader[k] for k, name in enumerate(reader.names) if name.startswith("a__")}
        assert list(got) == [c.name for c in clips]
        for clip in clips:
            _assert_same_clip(got[clip.name], clip)


def test_a_group_keeps_only_the_frames_each_clip_adds() -> None:
    views = _window_clips("a", 10, 4, 2)  # views of one video array (as coco's clips)
    owning = [dataclasses.replace(c, frames=c.frames.copy()) for c in views]  # as DAVIS's
    for clips in (views, owning):
        (group,) = shards.frame_groups(clips, max_clips=8)
        assert [len(piece) for piece in group.pieces] == [4, 2, 2, 2]
        assert [c.row for c in group.clips] == [0, 2, 4, 6]
        np.testing.assert_array_equal(np.concatenate(group.pieces), _window_video(10)[0])
    # a piece of a clip that owns its frames is a copy: holding it does not hold the clip's
    # other frames; a view of a shared buffer is kept as it is (no copy)
    (group,) = shards.frame_groups(owning, max_clips=8)
    pairs = zip(group.pieces[1:], owning[1:], strict=True)
    assert not any(np.shares_memory(piece, clip.frames) for piece, clip in pairs)
    (group,) = shards.frame_groups(views, max_clips=8)
    pairs = zip(group.pieces, views, strict=True)
    assert all(np.shares_memory(piece, clip.frames) for piece, clip in pairs)


def _tarfile_group_shard(path: Path, groups: list[list[Clip]]) -> bytes:
    """A shard of frame groups as tarfile and np.save write it (the format spec): the
    group's distinct frames under its first clip, every clip's rows in its meta."""
    with tarfile.open(path, "w", format=tarfile.PAX_FORMAT, encoding="utf-8") as tar:
        for group in groups:
            origin = group[0].source_frames.start
            by_index = {i: f for c in group for i, f in zip(c.source_frames, c.frames, strict=True)}
            frames = np.stack([by_index[i] for i in sorted(by_index)])
            payloads = [(f"{group[0].name}/frames.npy", _np_save(frames))]
            for clip in group:
                meta = {"name": clip.name, "object_ids": list(clip.object_ids),
                        "shape": list(clip.masks.shape),
                        "frames": [group[0].name, clip.source_frames.start - origin]}  # fmt: skip
                meta_bytes = json.dumps(meta, sort_keys=True).encode()
                payloads += [(f"{clip.name}/masks.npy", _np_save(np.packbits(clip.masks, -1))),
                             (f"{clip.name}/meta.json", meta_bytes)]  # fmt: skip
            for member, payload in payloads:
                info = tarfile.TarInfo(member)
                info.size, info.mtime, info.mode = len(payload), 0, 0o644
                info.uid, info.gid, info.uname, info.gname = 0, 0, "", ""
                tar.addfile(info, io.BytesIO(payload))
    return path.read_bytes()


def test_grouped_shards_are_what_tarfile_and_np_save_write(tmp_path: Path) -> None:
    sources = [("a", 10, 4, 2), ("b", 7, 5, 1)]
    shards.build_split(sources, _window_source, tmp_path / "split", seed=0, workers=1,
                       clips_per_shard=8, params={})  # fmt: skip
    a, b = _window_clips(*sources[0]), _window_clips(*sources[1])
    expected = _tarfile_group_shard(tmp_path / "reference.tar", [a, b])
    assert (tmp_path / "split" / "shard-00000.tar").read_bytes() == expected


def _rewrite_meta(split: Path, clip: str, change: dict) -> None:
    """Change one clip's meta.json in shard 0 (tarfile rewrites it; the manifest follows)."""
    members = _members(split)
    meta = json.loads(members[f"{clip}/meta.json"]) | change
    members[f"{clip}/meta.json"] = json.dumps(meta).encode()
    path = split / "shard-00000.tar"
    with tarfile.open(path, "w", format=tarfile.PAX_FORMAT, encoding="utf-8") as tar:
        for name, payload in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(payload)
            tar.addfile(info, io.BytesIO(payload))
    manifest = json.loads((split / "manifest.json").read_text())
    manifest["shards"][0]["bytes"] = path.stat().st_size
    (split / "manifest.json").write_text(json.dumps(manifest))


@pytest.mark.parametrize(
    ("change", "problem"),
    [
        ({"frames": ["a__00006", 0]}, r"field 'frames' \[.*\] names no frames"),  # not an owner
        ({"frames": ["a__00000", 7]}, r"rows 7\.\.11 of a__00000's 10 frames"),
        ({"frames": "a__00000"}, r"field 'frames' 'a__00000' is not \[owner clip, first row\]"),
        ({"object_ids": [1]}, r"field 'object_ids' \[1\] is not 2 integers"),
        ({"shape": [4, 2, 6, 8]}, r"field 'shape' \[.*\] does not match its frames"),
        ({"name": "b"}, "not this clip's meta"),
    ],
)
def test_reader_rejects_meta_that_points_outside_its_frames(
    tmp_path: Path, change: dict, problem: str
) -> None:
    split = tmp_path / "split"
    shards.build_split([("a", 10, 4, 2)], _window_source, split, seed=0, workers=1,
                       clips_per_shard=8, params={})  # fmt: skip
    shards.ShardReader(split)  # valid as written; and after a rewrite with nothing changed:
    _rewrite_meta(split, "a__00002", {})
    assert len(shards.ShardReader(split)) == 4
    _rewrite_meta(split, "a__00002", change)
    with pytest.raises(ValueError, match=f"shard-00000.tar: a__00002/meta.json: {problem}"):
        shards.ShardReader(split)


def test_coco_windows_read_back_as_video_clips_yields_them(tmp_path: Path) -> None:
    """Through the real source: sliding windows over COCO videos share frames in the shard
    and read back exactly as coco.video_clips yields them."""
    ann_path = _write_coco(tmp_path, 2)
    videos = coco.load_coco_videos(ann_path, tmp_path / "images")
    params = CLIP_PARAMS | {"max_objects": 3}
    clip_fn = functools.partial(coco.video_clips, **params)
    shards.build_split(videos, clip_fn, tmp_path / "out", seed=0, workers=1,
                       clips_per_shard=4, params=params)  # fmt: skip
    expected = [c for i, v in enumerate(videos) for c in clip_fn(v, rng=shards.source_rng(0, i))]
    reader = shards.ShardReader(tmp_path / "out")
    assert reader.names == [c.name for c in expected] and len(expected) == 4
    for k, clip in enumerate(expected):
        _assert_same_clip(reader[k], clip)
    owners = [n for n in _members(tmp_path / "out") if n.endswith("frames.npy")]
    assert owners == ["0__00000/frames.npy", "1__00000/frames.npy"]  # 3 frames each, once
