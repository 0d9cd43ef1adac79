"""The dataset linter: a dataset with many seeded defects reports each one, a clean one none."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
from coco_rle import compressed_rle, uncompressed_rle
from PIL import Image

from sam2_video import cli
from sam2_video.data.sources import validate

H, W = 20, 30


def _rect(top: int = 3, left: int = 4, height: int = 6, width: int = 8) -> np.ndarray:
    mask = np.zeros((H, W), dtype=bool)
    mask[top : top + height, left : left + width] = True
    return mask


POLYGON = [[2.0, 2.0, 12.0, 2.0, 7.0, 10.0]]


def _image(image_id: int, name: str, video, order, **extra) -> dict:
    entry = {"id": image_id, "file_name": name, "height": H, "width": W, **extra}
    if video is not None:
        entry["video_id"] = video
    if order is not None:
        entry["order_in_video"] = order
    return entry


def _ann(ann_id: int, image_id: int, track, segmentation, category: int = 1) -> dict:
    ann = {
        "id": ann_id,
        "image_id": image_id,
        "category_id": category,
        "segmentation": segmentation,
        "iscrowd": 0,
    }
    if track is not None:
        ann["track_id"] = track
    return ann


def _write_png(path: Path, seed: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    rgb = np.random.default_rng(seed).integers(0, 256, (H, W, 3), dtype=np.uint8)
    Image.fromarray(rgb).save(path)


def _write(root: Path, coco: dict) -> Path:
    path = root / "annotations.json"
    path.write_text(json.dumps(coco), encoding="utf-8")
    return path


def _clean_dataset(root: Path) -> Path:
    """Two videos of 3 frames, two tracks each on every frame, three mask encodings."""
    images, anns = [], []
    for video in (1, 2):
        for t in range(3):
            image_id = 10 * video + t
            name = f"v{video}/{t:03d}.png"
            _write_png(root / name, image_id)
            images.append(_image(image_id, name, video, t))
            anns.append(_ann(len(anns) + 1, image_id, 100 * video, compressed_rle(_rect(2, t))))
            seg = POLYGON if t % 2 else uncompressed_rle(_rect(10, 10 + t, 5, 5))
            anns.append(_ann(len(anns) + 1, image_id, 100 * video + 1, seg))
    return _write(
        root, {"images": images, "annotations": anns, "categories": [{"id": 1, "name": "thing"}]}
    )


def _defective_dataset(root: Path) -> tuple[Path, set[tuple[str, str, str]]]:
    """A video dataset with seeded defects; the (severity, file, field) each must produce."""
    for name, seed in (
        ("v1/000.png", 1),
        ("v2/000.png", 5),
        ("v2/001.png", 6),
        ("v2/002.png", 7),
        ("v3/000.png", 8),
        ("v3/001.png", 9),
        ("v1/extra.png", 11),
    ):
        _write_png(root / name, seed)
    truncated = root / "v1/002.jpg"
    Image.fromarray(np.full((H, W, 3), 90, np.uint8)).save(truncated, quality=90)
    truncated.write_bytes(truncated.read_bytes()[:-200])
    Image.fromarray(np.zeros((H, W, 3), np.uint8)).save(root / "v1/003.png")
    (root / "v1/004.jpg").write_bytes(b"this is not a JPEG")
    images = [
        _image(1, "v1/000.png", 1, 0),
        _image(2, "v1/001.png", 1, 1),  # file missing
        _image(3, "v1/002.jpg", 1, 2),  # truncated
        _image(4, "v1/003.png", 1, 3, height=H + 1),  # JSON size disagrees with the file
        _image(10, "/abs/v1/005.png", 1, 4),  # absolute path
        _image(12, "v1/004.jpg", 1, 5),  # not an image
        _image(5, "v2/000.png", 2, 0),
        _image(6, "v2/001.png", 2, None),  # no frame order
        _image(7, "v2/002.png", 2, 0),  # order 0 again in video 2
        _image(5, "v2/dup.png", 2, 7),  # duplicate image id
        _image(8, "v3/000.png", 3, 0),
        _image(9, "v3/001.png", 3, 1),  # video 3: 2 frames < clip length 3
        _image(11, "v1/extra.png", None, None),  # no video_id in a video dataset
    ]
    wrong_size = compressed_rle(np.zeros((H + 1, W), bool))
    short_counts = uncompressed_rle(_rect())
    short_counts["counts"][-1] -= 1
    cut = compressed_rle(_rect())
    cut["counts"] = cut["counts"][:-2]
    empty = compressed_rle(np.zeros((H, W), bool))
    anns = [
        _ann(1, 1, 10, compressed_rle(_rect())),
        _ann(2, 3, 10, POLYGON),  # track 10: frames 1 and 3, fine
        _ann(3, 1, 11, wrong_size),  # RLE size mismatch
        _ann(4, 5, 12, short_counts),  # RLE counts do not sum to h*w
        _ann(5, 5, 13, cut),  # compressed RLE cut short
        _ann(6, 6, 13, [[1.0, 1.0, 5.0, 5.0]]),  # polygon of 2 points
        _ann(7, 99, 10, POLYGON),  # unknown image
        _ann(8, 7, 16, POLYGON, category=5),  # unknown category
        _ann(15, 5, 16, POLYGON),  # track 16: frames 5 and 7, fine
        _ann(9, 8, 30, POLYGON),
        _ann(10, 9, 30, POLYGON),
        _ann(11, 1, 14, POLYGON),  # track 14: a single frame
        _ann(12, 5, 15, empty),
        _ann(13, 7, 15, empty),  # track 15: only empty masks
        _ann(1, 9, 30, POLYGON),  # duplicate annotation id
        _ann(16, 9, None, POLYGON),  # no track id while the others have one
    ]
    categories = [{"id": 1, "name": "thing"}, {"id": 1, "name": "again"}]
    path = _write(root, {"images": images, "annotations": anns, "categories": categories})
    js = "annotations.json"
    expected = {
        ("error", js, "categories[id=1].id"),
        ("error", js, "images[id=5].id"),
        ("error", js, "images[id=6].order_in_video"),
        ("error", js, "images[id=7].order_in_video"),
        ("error", js, "images[id=10].file_name"),
        ("error", js, "images[id=11].video_id"),
        ("error", js, "annotations[id=1].id"),
        ("error", js, "annotations[id=3].segmentation"),
        ("error", js, "annotations[id=4].segmentation"),
        ("error", js, "annotations[id=5].segmentation"),
        ("error", js, "annotations[id=6].segmentation"),
        ("error", js, "annotations[id=7].image_id"),
        ("error", js, "annotations[id=8].category_id"),
        ("error", js, "annotations[id=16].track_id"),
        ("warning", js, "annotations[track_id=14]"),
        ("warning", js, "annotations[track_id=15]"),
        ("warning", js, "images[video_id=3]"),
        ("error", "v1/001.png", "images[id=2].file_name"),
        ("error", "v1/002.jpg", "images[id=3].file_name"),
        ("error", "v1/003.png", "images[id=4].height/width"),
        ("error", "v1/004.jpg", "images[id=12].file_name"),
    }
    return path, expected


def _keys(problems: list[validate.Problem], root: Path) -> set[tuple[str, str, str]]:
    return {(p.severity, p.file.relative_to(root).as_posix(), p.field) for p in problems}


# ---------------------------------------------------------------------------- tests


def test_clean_dataset_reports_nothing_and_exits_0(tmp_path, capsys) -> None:
    path = _clean_dataset(tmp_path)
    assert validate.check_coco_dataset(path, tmp_path, clip_length=3) == []
    assert cli.main(["check", str(path), str(tmp_path), "--clip-length", "3"]) == 0
    assert capsys.readouterr().out == f"{path}: no problems found\n"


def test_every_seeded_defect_is_reported_with_file_and_field(tmp_path) -> None:
    path, expected = _defective_dataset(tmp_path)
    problems = validate.check_coco_dataset(path, tmp_path, clip_length=3)
    assert _keys(problems, tmp_path) == expected
    assert len(problems) == len(expected)  # each defect once


@pytest.mark.parametrize(
    ("field", "words"),
    [
        ("images[id=2].file_name", "not found"),
        ("images[id=3].file_name", "truncated"),
        ("images[id=4].height/width", "20x30 (HxW) but the JSON says 21x30"),
        ("images[id=6].order_in_video", "add one of order_in_video"),
        ("annotations[id=3].segmentation", "[21, 30] disagrees"),
        ("annotations[id=4].segmentation", "sum to 599, expected height*width=600"),
        ("annotations[id=6].segmentation", "at least 3 points"),
        ("annotations[track_id=14]", "single frame (image id=1)"),
        ("annotations[track_id=15]", "is empty"),
        ("images[video_id=3]", "fewer than clip_length 3"),
    ],
)
def test_messages_say_what_is_wrong(tmp_path, field, words) -> None:
    path, _ = _defective_dataset(tmp_path)
    (problem,) = [
        p for p in validate.check_coco_dataset(path, tmp_path, clip_length=3) if p.field == field
    ]
    assert words in problem.message


def test_cli_prints_linter_lines_and_exits_1(tmp_path, capsys) -> None:
    path, expected = _defective_dataset(tmp_path)
    assert cli.main(["check", str(path), str(tmp_path), "--clip-length", "3"]) == 1
    *lines, last = capsys.readouterr().out.splitlines()
    assert len(lines) == len(expected)
    pattern = re.compile(r"(?P<file>[^:]+):(?P<field>[^:]+): (?P<sev>error|warning): .+")
    seen = set()
    for line in lines:
        match = pattern.fullmatch(line)
        assert match, line
        seen.add(
            (match["sev"], Path(match["file"]).relative_to(tmp_path).as_posix(), match["field"])
        )
    assert seen == expected
    assert last == f"{path}: 18 errors, 3 warnings"


def test_warnings_alone_exit_0(tmp_path, capsys) -> None:
    path = _clean_dataset(tmp_path)
    assert cli.main(["check", str(path), str(tmp_path), "--clip-length", "4"]) == 0
    out = capsys.readouterr().out
    assert "images[video_id=1]: warning: video has 3 frame(s)" in out
    assert out.endswith("0 errors, 2 warnings\n")


def test_static_dataset_warns_about_images_without_objects(tmp_path) -> None:
    for name in ("a.png", "b.png"):
        _write_png(tmp_path / name, 0)
    images = [_image(1, "a.png", None, None), _image(2, "b.png", None, None)]
    coco = {"images": images, "annotations": [_ann(1, 1, None, POLYGON)], "categories": [{"id": 1}]}
    problems = validate.check_coco_dataset(_write(tmp_path, coco), tmp_path)
    assert _keys(problems, tmp_path) == {("warning", "annotations.json", "images[id=2]")}


@pytest.mark.parametrize(
    ("text", "fields"),
    [
        ("[1, 2]", {"(top level)"}),
        ('{"images": [], "categories": {}}', {"annotations", "categories"}),
        ('{"images": [', {"line 1"}),
    ],
)
def test_not_coco_json(tmp_path, text, fields) -> None:
    path = tmp_path / "annotations.json"
    path.write_text(text, encoding="utf-8")
    problems = validate.check_coco_dataset(path, tmp_path)
    assert {p.field for p in problems} == fields
    assert all(p.severity == "error" and p.file == path for p in problems)


def test_missing_json_and_image_dir(tmp_path) -> None:
    (missing,) = validate.check_coco_dataset(tmp_path / "nope.json", tmp_path)
    assert missing.field == "(file)" and "not found" in missing.message
    path = _clean_dataset(tmp_path / "data")
    (no_dir,) = validate.check_coco_dataset(path, tmp_path / "images")
    assert no_dir.file == tmp_path / "images" and no_dir.field == "(image dir)"
