"""Users' data as annotation tools export it, through the fetch and shard stages' functions
(not dvc): COCO video with a late object, short videos, a box-only annotation and no track
ids; CVAT's COCO export of one video task; SAM2's SA-V layout (sparse annotation); and
`sam2-video check` / `export-davis` on them."""

from __future__ import annotations

import dataclasses
import json
import runpy
import tarfile
from pathlib import Path

import numpy as np
import pytest
from dvc_project import REPO
from PIL import Image
from stored import LAYOUT_SIZE, shard_params, write_cvat_video, write_sav, write_video_coco
from test_shard_stage import shard_stage

from sam2_video import cli
from sam2_video.data import shards
from sam2_video.data.davis import write_davis_clip
from sam2_video.data.sources import coco_video, sav, validate
from sam2_video.params import defaults


def fetch_source(kind: str, root: Path) -> dict:
    """data/raw/source.json as the fetch stage writes it for fetch.source=kind."""
    fetch = runpy.run_path(str(REPO / "stages" / "fetch.py"))
    p = dataclasses.replace(defaults().fetch, source=kind, local_dir=str(root))
    return fetch["local_sav"](p) if kind == "sav" else fetch["local_coco"](p)


def run_shard(source: dict, out: Path, train_length: int = 8, **overrides) -> dict:
    p = shard_params(clip_length=16, tune_fraction=0, **overrides)
    return shard_stage().build_splits(source, p, train_length, out)


def stored_meta(split_dir: Path) -> dict[str, dict]:
    """name -> meta.json of every stored source of a split."""
    metas = {}
    for shard in sorted(split_dir.glob("shard-*.tar")):
        with tarfile.open(shard) as tar:
            for info in tar.getmembers():
                if info.name.endswith("/meta.json"):
                    metas[info.name.split("/")[0]] = json.loads(tar.extractfile(info).read())
    return metas


# ---------------------------------------------------------------------------- COCO video


@pytest.fixture
def coco_root(tmp_path: Path) -> Path:
    root = tmp_path / "user"
    write_video_coco(root, "train.json", {"late": (20, 3), "box": (12, 0), "short": (3, 0)})
    write_video_coco(root, "val.json", {"val": (16, 0)})
    return root


def test_coco_video_keeps_late_objects_twelve_frame_videos_and_skips_boxes(
    coco_root: Path, tmp_path: Path, capsys
) -> None:
    manifests = run_shard(fetch_source("coco_video", coco_root), tmp_path / "shards")
    out = capsys.readouterr().out
    # 12-frame video trains (train.clip_length 8 < shard.clip_length 16); 3 frames: skipped
    assert manifests["train"]["num_sources"] == 2
    assert manifests["train"]["skips"] == {shards.SKIP_SHORT_VIDEO: 1}
    assert "shard: train: 2 sources, skipped {'video_shorter_than_clip': 1}" in out
    assert "(videos need 8 frames)" in out and "(videos need 16 frames)" in out
    # the box-only annotation: skipped with a warning naming its count and id
    assert "warning: 1 annotation(s) without a mask" in out and "[id=" in out
    meta = stored_meta(tmp_path / "shards" / "train")
    late = meta["late"]["masks"]
    assert set(late[0]) == {"1"} and set(late[3]) == {"1", "2"}  # object 2 enters on frame 3
    assert all(set(frame) == {"1", "2"} for frame in meta["box"]["masks"])  # box id 3 gone
    with shards.ShardReader(tmp_path / "shards" / "train", training_length=8) as reader:
        names = [reader.source(i).name for i in range(reader.num_sources)]
        assert names == ["box", "late"] and reader.source(0).num_frames == 12
        clip = reader.training_clip(0, np.random.default_rng(0))
        assert clip.frames.shape[0] == 8
    with pytest.raises(ValueError, match="promise only 8"):
        shards.ShardReader(tmp_path / "shards" / "train", training_length=10)


def test_video_without_track_ids_has_category_objects(tmp_path: Path) -> None:
    path = write_video_coco(tmp_path, "train.json", {"v": (6, 2)}, tracks=False)
    (video,) = coco_video.load_coco_videos(path, tmp_path)
    assert set(video.frame_masks(0)) == {1} and set(video.frame_masks(2)) == {1, 2}


def test_check_exits_0_with_warnings_and_1_with_errors(coco_root: Path, capsys) -> None:
    args = ["check", str(coco_root / "train.json"), str(coco_root), "--clip-length", "8"]
    assert cli.main(args) == 0
    out = capsys.readouterr().out
    assert "annotations: warning: 1 annotation(s) without a mask" in out
    assert "images[video_id=short]: warning: video has 3 frame(s)" in out
    assert out.strip().endswith("0 errors, 2 warnings")
    data = json.loads((coco_root / "train.json").read_text())
    data["annotations"][0]["segmentation"] = {"size": [1, 1], "counts": "x"}
    (coco_root / "train.json").write_text(json.dumps(data))
    assert cli.main(args) == 1


# ---------------------------------------------------------------------------- CVAT


def test_cvat_video_export_is_one_video_in_file_name_order(tmp_path: Path, capsys) -> None:
    path = write_cvat_video(tmp_path)
    found: list[validate.Problem] = []
    (video,) = coco_video.load_coco_videos(path, tmp_path, warnings=found)
    assert video.name == "train" and video.num_frames == 12
    assert [p.name for p in video.frame_paths] == [f"frame_{t:06d}.PNG" for t in range(12)]
    assert all(set(video.frame_masks(t)) == {0, 1} for t in range(12))  # box-only track 2 gone
    assert [p.field for p in found] == ["annotations"] and "[id=" in found[0].message
    assert cli.main(["check", str(path), str(tmp_path)]) == 0
    assert "0 errors, 1 warning" in capsys.readouterr().out


def test_cvat_export_shards_through_the_stage(tmp_path: Path) -> None:
    root = tmp_path / "user"
    write_cvat_video(root)
    write_cvat_video(root / "v", frames=16, name="../val.json")  # val: file names under v/
    data = json.loads((root / "val.json").read_text())
    for image in data["images"]:
        image["file_name"] = "v/" + image["file_name"]
    (root / "val.json").write_text(json.dumps(data))
    manifests = run_shard(fetch_source("coco_video", root), tmp_path / "shards")
    assert manifests["train"]["num_sources"] == 1 and manifests["val"]["num_sources"] == 1
    assert sorted(stored_meta(tmp_path / "shards" / "val")) == ["val"]


def test_natural_order_and_mixed_video_ids() -> None:
    names = ["f10.png", "f2.png", "f1.png"]
    assert sorted(names, key=validate.natural_key) == ["f1.png", "f2.png", "f10.png"]
    images = [{"id": i, "file_name": n} for i, n in enumerate(names)]
    assert validate.single_video_order(images) == {2: 0, 1: 1, 0: 2}


# ---------------------------------------------------------------------------- SA-V


def test_sav_layout_reads_annotated_frames_as_sam2s_loader(tmp_path: Path) -> None:
    root = write_sav(tmp_path / "sav", {"a": 48, "a0": 8, "b": 40, "c": 80})
    videos = sav.load_sav_videos(root)
    assert [v.name for v in videos] == ["a", "a0", "b", "c"]
    first = videos[0]
    # 12 annotations (frames 0, 4, ..., 44); the third has a None object: dropped
    assert [int(p.stem) for p in first.frame_paths] == [t for t in range(0, 48, 4) if t != 8]
    assert set(first.frame_masks(0)) == {1} and set(first.frame_masks(1)) == {1, 2}
    assert first.frame_size(0) == LAYOUT_SIZE
    manifests = run_shard(fetch_source("sav", root), tmp_path / "shards", stride=4)
    # a (11 annotated frames) and b (9) train (>= 8), a0 (2) is skipped; val: c (19 >= 16)
    assert manifests["train"]["num_sources"] == 2
    assert manifests["train"]["skips"] == {shards.SKIP_SHORT_VIDEO: 1}
    assert sorted(stored_meta(tmp_path / "shards" / "val")) == ["c"]


def test_sav_val_split_too_short_is_an_error_naming_the_lengths(tmp_path: Path) -> None:
    root = write_sav(tmp_path / "sav", {"a": 80, "b": 40})
    with pytest.raises(ValueError, match="val split has no usable"):
        run_shard(fetch_source("sav", root), tmp_path / "shards")


def test_check_reads_sav_and_davis_folders(tmp_path: Path, capsys) -> None:
    root = write_sav(tmp_path / "sav", {"a": 40, "b": 12})
    assert cli.main(["check", str(root), "--clip-length", "8"]) == 0
    out = capsys.readouterr().out
    assert "(video b): warning: video has 2 (annotated) frame(s)" in out
    (root / "a_manual.json").write_text('{"masklet": [[{"size": [48, 64], "counts": 5}]]}')
    assert cli.main(["check", str(root)]) == 1
    assert "a_manual.json:(video a): error:" in capsys.readouterr().out
    frames = np.zeros((3, *LAYOUT_SIZE, 3), np.uint8)
    masks = np.zeros((3, 1, *LAYOUT_SIZE), bool)
    masks[1:, 0, :5, :5] = True  # enters on frame 1
    write_davis_clip(tmp_path / "davis", "late", frames, masks, [1])
    assert cli.main(["check", str(tmp_path / "davis"), "--clip-length", "4"]) == 0
    assert "(video late): warning: video has 3" in capsys.readouterr().out
    (tmp_path / "davis" / "Annotations" / "late" / "00001.png").unlink()
    assert cli.main(["check", str(tmp_path / "davis")]) == 1
    assert "00001.jpg:(video late): error: no annotation" in capsys.readouterr().out


def test_fetch_sav_without_frames_names_the_layout(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="JPEGImages_24fps"):
        fetch_source("sav", tmp_path)


# ---------------------------------------------------------------------------- export-davis


def test_export_davis_writes_the_stored_jpeg_bytes(coco_root: Path, tmp_path: Path) -> None:
    run_shard(fetch_source("coco_video", coco_root), tmp_path / "shards")
    val = tmp_path / "shards" / "val"
    out = tmp_path / "export"
    assert cli.main(["export-davis", str(val), str(out)]) == 0
    with shards.ShardReader(val) as reader:
        clip = reader[0]
        files = reader.stored_files(0)
    exported = sorted((out / "JPEGImages" / clip.name).glob("*.jpg"))
    assert len(exported) == len(files) == clip.frames.shape[0]
    for t, path in enumerate(exported):
        assert path.read_bytes() == files[t][0]  # the stored bytes, not re-encoded
        with Image.open(path) as image:
            np.testing.assert_array_equal(np.asarray(image.convert("RGB")), clip.frames[t])


def test_export_davis_encodes_png_frames_as_jpeg(tmp_path: Path) -> None:
    root = tmp_path / "user"
    write_cvat_video(root, frames=16)
    source = {
        "kind": "coco_video",
        "splits": {
            "val": {"annotations": str(root / "train.json"), "images": str(root)},
            "train": {"annotations": str(root / "train.json"), "images": str(root)},
        },
    }
    run_shard(source, tmp_path / "shards")
    out = tmp_path / "export"
    assert cli.main(["export-davis", str(tmp_path / "shards" / "val"), str(out)]) == 0
    (jpeg,) = list((out / "JPEGImages").glob("*/00000.jpg"))
    with Image.open(jpeg) as image:
        assert image.format == "JPEG"
