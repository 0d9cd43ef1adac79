"""Source shards: real JPEG files and COCO JSON stored, then read back independently of the
reader (tarfile, json, pycocotools, PIL) and through it."""

from __future__ import annotations

import functools
import hashlib
import io
import json
import multiprocessing
import os
import signal
import subprocess
import sys
import tarfile
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from pycocotools import mask as mask_utils
from stored import make_images, make_videos, shard_params, store, write_coco

from sam2_video.data import shards
from sam2_video.data.sources import coco_video

TESTS = Path(__file__).parent


# ---------------------------------------------------------------------------- data on disk


def _members(shard: Path) -> dict[str, bytes]:
    with tarfile.open(shard) as tar:
        return {info.name: tar.extractfile(info).read() for info in tar.getmembers()}


def _digests(directory: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(directory.iterdir())}


# ---------------------------------------------------------------------------- the format


def test_tar_layout_read_independently(tmp_path: Path) -> None:
    videos = make_videos(tmp_path / "raw")
    store(videos, tmp_path / "split", clip_length=4, sources_per_shard=1, max_side=10_000)
    shard = tmp_path / "split" / "shard-00000.tar"
    with tarfile.open(shard) as tar:
        infos = tar.getmembers()
    assert [i.name for i in infos] == ["0/meta.json"] + [f"0/{t:05d}.jpg" for t in range(6)]
    assert {(i.mtime, i.uid, i.gid, i.mode, i.uname, i.gname) for i in infos} == {
        (0, 0, 0, 0o644, "", "")
    }
    members = _members(shard)
    meta = json.loads(members["0/meta.json"])
    assert meta["name"] == "0" and meta["still"] is False and meta["size"] == [240, 320]
    assert len(meta["masks"]) == len(meta["eligible"]) == 6
    assert sorted(meta["masks"][0]) == ["1", "2", "3"] and sorted(meta["masks"][3]) == ["1", "2"]
    for t, path in enumerate(videos[0].frame_paths):  # no resize: the source files' bytes
        assert members[f"0/{t:05d}.jpg"] == path.read_bytes()
    manifest = json.loads((tmp_path / "split" / "manifest.json").read_text())
    assert manifest["num_sources"] == 2 and manifest["version"] == shards.VERSION
    assert "workers" not in manifest["params"] and manifest["params"]["clip_length"] == 4


@pytest.mark.parametrize("max_side", [10_000, 160])
def test_stored_masks_equal_pycocotools_decoding(tmp_path: Path, max_side: int) -> None:
    """Each object on each frame: the stored RLE, decoded by pycocotools, against the
    annotation decoded by pycocotools (and resized by pixel-centre sampling): IoU >= 0.98."""
    path = write_coco(tmp_path / "raw", 1, 5)
    (video,) = coco_video.load_coco_videos(path, tmp_path / "raw")
    store([video], tmp_path / "split", clip_length=2, max_side=max_side)
    meta = json.loads(_members(tmp_path / "split" / "shard-00000.tar")["0/meta.json"])
    height, width = meta["size"]
    rows = ((2 * np.arange(height) + 1) * 240) // (2 * height)  # pixel centres
    cols = ((2 * np.arange(width) + 1) * 320) // (2 * width)
    coco = json.loads(path.read_text())
    for ann in coco["annotations"]:
        t, oid = ann["image_id"] - 1, str(ann["track_id"])
        segm = ann["segmentation"]
        rle = segm if isinstance(segm["counts"], str) else mask_utils.frPyObjects(segm, 240, 320)
        truth = mask_utils.decode(rle).astype(bool)[rows][:, cols]
        stored = mask_utils.decode({"size": [height, width], "counts": meta["masks"][t][oid]})
        iou = (truth & (stored > 0)).sum() / (truth | (stored > 0)).sum()
        assert iou >= 0.98, (t, oid, iou)


def test_resized_frames_are_jpegs_at_the_stated_quality(tmp_path: Path) -> None:
    videos = make_videos(tmp_path / "raw", videos=1, frames=2)
    store(videos, tmp_path / "split", clip_length=2, max_side=160, jpeg_quality=77)
    members = _members(tmp_path / "split" / "shard-00000.tar")
    source = Image.open(videos[0].frame_paths[1]).convert("RGB")
    expected = io.BytesIO()
    source.resize((160, 120), Image.Resampling.BILINEAR).save(expected, "JPEG", quality=77)
    assert members["0/00001.jpg"] == expected.getvalue()


@pytest.mark.parametrize("kind", ["video", "images"])
def test_shards_stay_near_the_source_bytes_at_source_size(tmp_path: Path, kind: str) -> None:
    sources = (
        make_videos(tmp_path / "raw", 2, 8) if kind == "video" else make_images(tmp_path / "raw", 8)
    )
    store(sources, tmp_path / "split", clip_length=4, max_side=10_000)
    source_bytes = sum(s.frame_path(t).stat().st_size for s in sources for t in range(s.num_frames))
    shard_bytes = sum(p.stat().st_size for p in (tmp_path / "split").glob("*.tar"))
    manifest = json.loads((tmp_path / "split" / "manifest.json").read_text())
    assert manifest["source_bytes"] == source_bytes and manifest["total_bytes"] == shard_bytes
    assert shard_bytes <= 1.3 * source_bytes, shard_bytes / source_bytes


def test_shards_are_byte_identical_for_one_and_two_workers(tmp_path: Path) -> None:
    videos, images = make_videos(tmp_path / "v", 3, 9), make_images(tmp_path / "i", 5)
    for name, sources in (("videos", videos), ("images", images)):
        built = []
        for workers in (1, 2):
            out = tmp_path / f"{name}{workers}"
            store(sources, out, workers=workers, sources_per_shard=2, clip_length=3, max_side=96)
            built.append(_digests(out))
        assert built[0] == built[1] and len(built[0]) >= 3, name


# ---------------------------------------------------------------------------- bad input, atomicity


class _Watched:
    """A source that, when its first frame is encoded, records the bytes already in the
    shard being written (the build's temp directory)."""

    def __init__(self, source, out: Path, seen: list[int]) -> None:
        self._source, self._out, self._seen = source, out, seen

    def __getattr__(self, name: str):
        return getattr(self._source, name)

    def frame_masks(self, index: int):
        if index == 0:
            partial = list(self._out.parent.glob(f".tmp-{self._out.name}-*/*/shard-00000.tar"))
            self._seen.append(sum(p.stat().st_size for p in partial))
        return self._source.frame_masks(index)


def test_sources_are_written_as_they_arrive_not_held_per_shard(tmp_path: Path) -> None:
    first, second = make_videos(tmp_path / "raw", 2, 6)
    out, seen = tmp_path / "split", []
    store([first, _Watched(second, out, seen)], out, clip_length=2, max_side=10_000)
    jpegs = sum(first.frame_path(t).stat().st_size for t in range(6))
    assert len(seen) == 1 and seen[0] >= jpegs - 16 * 1024  # only the file buffer may wait
    assert len(list(out.glob("shard-*.tar"))) == 1  # both in one shard (64 per shard)


def test_bad_image_fails_the_build_and_keeps_the_previous_split(tmp_path: Path) -> None:
    videos = make_videos(tmp_path / "raw")
    out = tmp_path / "split"
    store(videos, out, clip_length=3)
    before = _digests(out)
    videos[1].frame_paths[2].write_bytes(b"not a jpeg")
    for workers in (1, 2):
        with pytest.raises(ValueError, match=r"v1/00002\.jpg: cannot read image"):
            shards.build_split(videos, out, shard_params(clip_length=3, workers=workers))
        assert _digests(out) == before
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".tmp")]


def test_duplicate_source_names_are_refused(tmp_path: Path) -> None:
    (video,) = make_videos(tmp_path / "raw", videos=1)
    with pytest.raises(ValueError, match="source name '0' occurs twice"):
        store([video, video], tmp_path / "split", clip_length=3)


_SLOW_BUILD = """
import sys, time
from pathlib import Path
from stored import shard_params
from sam2_video.data import shards
from sam2_video.data.sources import coco_video

class Slow(coco_video.CocoVideo):
    def frame_masks(self, index):
        time.sleep(0.2)
        return super().frame_masks(index)

root = Path(sys.argv[1])
videos = coco_video.load_coco_videos(root / "annotations.json", root)
slow = [Slow(**{f: getattr(v, f) for f in v.__dataclass_fields__}) for v in videos]
shards.build_split(slow, Path(sys.argv[2]), shard_params(clip_length=2, sources_per_shard=1))
"""


def test_a_killed_build_leaves_no_shard_that_looks_complete(tmp_path: Path) -> None:
    videos = make_videos(tmp_path / "raw", videos=4, frames=3)
    out = tmp_path / "split"
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(TESTS), *sys.path]))
    cmd = [sys.executable, "-c", _SLOW_BUILD, str(tmp_path / "raw"), str(out)]
    child = subprocess.Popen(cmd, env=env)
    deadline = time.monotonic() + 60
    while not list(tmp_path.glob(".tmp-split-*/split/shard-00001.tar")):
        assert child.poll() is None and time.monotonic() < deadline, "no shard was written"
        time.sleep(0.05)
    child.send_signal(signal.SIGKILL)  # kill -9 after the first shards
    child.wait()
    assert not out.exists()  # only a .tmp-* sibling is left, never the split itself
    with pytest.raises(FileNotFoundError, match="run the shard stage"):
        shards.ShardReader(out)
    reader = store(videos, out, clip_length=2, sources_per_shard=1)  # the next run completes
    assert reader.num_sources == 4


def test_reader_errors_name_the_file_and_what_to_do(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="run the shard stage"):
        shards.ShardReader(tmp_path / "nothing")
    out = tmp_path / "split"
    store(make_videos(tmp_path / "raw"), out, clip_length=3, sources_per_shard=1)
    manifest = json.loads((out / "manifest.json").read_text())
    shard = out / "shard-00001.tar"
    shard.write_bytes(shard.read_bytes()[:-1024])
    with pytest.raises(ValueError, match=r"shard-00001.tar: does not match manifest.json"):
        shards.ShardReader(out)
    (out / "manifest.json").write_text(json.dumps(manifest | {"version": 1}))
    with pytest.raises(ValueError, match="version 1, this code reads"):
        shards.ShardReader(out)
    members = _members(out / "shard-00000.tar")
    members["0/meta.json"] = members["0/meta.json"].replace(b'"still": false', b'"still": 0')
    with tarfile.open(out / "shard-00000.tar", "w") as tar:
        for name, data in members.items():
            tar.addfile(_info(name, data), io.BytesIO(data))
    record = manifest["shards"][0] | {"bytes": (out / "shard-00000.tar").stat().st_size}
    manifest["shards"] = [record, *manifest["shards"][1:]]
    (out / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(ValueError, match=r"field 'still' 0 is not true/false: re-run the shard"):
        shards.ShardReader(out)


def _info(name: str, data: bytes) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    return info


# ---------------------------------------------------------------------------- reading


def _clip_digest(reader: shards.ShardReader, index: int) -> str:
    clip = reader[index]
    return clip.name + hashlib.sha256(clip.frames.tobytes() + clip.masks.tobytes()).hexdigest()


def _check_in_child(reader: shards.ShardReader, expected: list[str]) -> None:
    assert [_clip_digest(reader, k) for k in range(len(reader))] == expected


@pytest.mark.slow
def test_reader_works_in_forked_and_spawned_workers(tmp_path: Path) -> None:
    reader = store(make_videos(tmp_path / "raw"), tmp_path / "split", clip_length=3, stride=2)
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
