from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from sam2_video.data import davis
from sam2_video.data.davis import (
    davis_palette,
    read_davis_annotations,
    read_davis_frames,
    write_davis_clip,
    write_palette_png,
)


def smooth_frames(num_frames: int, h: int, w: int) -> np.ndarray:
    """(T, H, W, 3) uint8 gradients: JPEG keeps them within a few grey levels."""
    ys, xs = np.mgrid[0:h, 0:w]
    frames = [
        np.stack([xs * 255 // w, ys * 255 // h, np.full_like(xs, 40 * t)], axis=-1)
        for t in range(num_frames)
    ]
    return np.stack(frames).astype(np.uint8)


def two_object_masks() -> np.ndarray:
    masks = np.zeros((3, 2, 24, 32), dtype=bool)  # (T, O, H, W)
    masks[:, 0, 2:10, 2:12] = True
    masks[:, 1, 8:20, 10:30] = True  # overlaps object 0 on rows 8..9, cols 10..11
    masks[2, 1] = False  # object 1 leaves on the last frame
    return masks


def test_palette_is_the_davis_voc_palette() -> None:
    palette = np.array(davis_palette()).reshape(256, 3)
    assert palette[0].tolist() == [0, 0, 0]
    assert palette[1].tolist() == [128, 0, 0]
    assert palette[2].tolist() == [0, 128, 0]
    assert palette[3].tolist() == [128, 128, 0]
    assert palette[4].tolist() == [0, 0, 128]
    assert palette[255].tolist() == [224, 224, 192]


def test_write_palette_png_round_trips_indices_with_palette(tmp_path: Path) -> None:
    index_map = np.array([[0, 1, 2], [3, 7, 255]], dtype=np.uint8)
    write_palette_png(tmp_path / "m.png", index_map)
    with Image.open(tmp_path / "m.png") as image:
        assert image.mode == "P"
        np.testing.assert_array_equal(np.array(image), index_map)
        assert image.convert("RGB").getpixel((1, 0)) == (128, 0, 0)
    assert [p.name for p in tmp_path.iterdir()] == ["m.png"]  # no temp left behind


def test_write_palette_png_rejects_non_uint8(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="uint8"):
        write_palette_png(tmp_path / "m.png", np.zeros((4, 4), dtype=np.int64))
    assert not (tmp_path / "m.png").exists()


def test_write_davis_clip_layout_and_round_trip(tmp_path: Path) -> None:
    frames, masks = smooth_frames(3, 24, 32), two_object_masks()
    write_davis_clip(tmp_path, "clip_a", frames, masks, object_ids=(17, 4))
    names = ["00000", "00001", "00002"]
    assert sorted(p.stem for p in (tmp_path / "JPEGImages" / "clip_a").iterdir()) == names
    assert sorted(p.name for p in (tmp_path / "Annotations" / "clip_a").iterdir()) == [
        f"{n}.png" for n in names
    ]
    read_masks, indices, frame_names = read_davis_annotations(tmp_path / "Annotations" / "clip_a")
    assert indices == [1, 2]  # k-th object of object_ids -> index k + 1
    assert frame_names == names
    expected = masks.copy()
    expected[:, 0] &= ~masks[:, 1]  # overlap: the later object wins
    np.testing.assert_array_equal(read_masks, expected)
    read_frames = read_davis_frames(tmp_path / "JPEGImages" / "clip_a")
    assert read_frames.shape == frames.shape and read_frames.dtype == np.uint8
    assert np.abs(read_frames.astype(int) - frames).max() <= 8  # JPEG is lossy


def test_write_davis_clip_replaces_existing_clip(tmp_path: Path) -> None:
    frames, masks = smooth_frames(3, 24, 32), two_object_masks()
    write_davis_clip(tmp_path, "c", frames, masks, object_ids=(1, 2))
    write_davis_clip(tmp_path, "c", frames[:2], masks[:2, :1], object_ids=(1,))
    read_masks, indices, _ = read_davis_annotations(tmp_path / "Annotations" / "c")
    assert read_masks.shape == (2, 1, 24, 32) and indices == [1]
    assert len(list((tmp_path / "JPEGImages" / "c").iterdir())) == 2


def test_failed_clip_write_keeps_previous_clip_and_leaves_no_partial(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    frames, masks = smooth_frames(3, 24, 32), two_object_masks()
    write_davis_clip(tmp_path, "c", frames, masks, object_ids=(1, 2))
    before = read_davis_annotations(tmp_path / "Annotations" / "c")[0]
    calls = []

    def failing_write(path: Path, index_map: np.ndarray) -> None:
        calls.append(path)
        if len(calls) == 2:
            raise OSError("disk full")
        Image.fromarray(index_map).save(path)

    monkeypatch.setattr(davis, "write_palette_png", failing_write)
    with pytest.raises(OSError, match="disk full"):
        write_davis_clip(tmp_path, "c", frames, masks[:, :1], object_ids=(1,))
    monkeypatch.undo()
    np.testing.assert_array_equal(read_davis_annotations(tmp_path / "Annotations" / "c")[0], before)
    for sub in ("Annotations", "JPEGImages"):
        assert [p.name for p in (tmp_path / sub).iterdir()] == ["c"]


def test_write_davis_clip_rejects_bad_arrays(tmp_path: Path) -> None:
    frames, masks = smooth_frames(3, 24, 32), two_object_masks()
    with pytest.raises(ValueError, match="masks must be"):
        write_davis_clip(tmp_path, "c", frames, masks, object_ids=(1,))
    with pytest.raises(ValueError, match="frames must be"):
        write_davis_clip(tmp_path, "c", frames[..., 0], masks, object_ids=(1, 2))
    with pytest.raises(ValueError, match="plain folder name"):
        write_davis_clip(tmp_path, "../c", frames, masks, object_ids=(1, 2))
    assert not (tmp_path / "Annotations").exists()


def test_read_annotations_union_of_indices_and_void(tmp_path: Path) -> None:
    first = np.zeros((6, 6), dtype=np.uint8)
    first[1, 1] = 7
    first[0, :] = 255  # void reads as background
    second = np.zeros((6, 6), dtype=np.uint8)
    second[2, 2] = 3
    write_palette_png(tmp_path / "a.png", first)
    write_palette_png(tmp_path / "b.png", second)
    masks, indices, names = read_davis_annotations(tmp_path)
    assert indices == [3, 7] and names == ["a", "b"]
    assert masks.shape == (2, 2, 6, 6)
    assert masks[0, 1, 1, 1] and masks[1, 0, 2, 2]
    assert masks.sum() == 2


def test_read_annotations_rejects_non_palette_png(tmp_path: Path) -> None:
    Image.fromarray(np.zeros((6, 6), dtype=np.uint8)).save(tmp_path / "00000.png")  # mode L
    with pytest.raises(ValueError, match=r"00000\.png.*palette"):
        read_davis_annotations(tmp_path)


def test_read_annotations_rejects_frames_of_differing_size(tmp_path: Path) -> None:
    write_palette_png(tmp_path / "00000.png", np.zeros((6, 6), dtype=np.uint8))
    write_palette_png(tmp_path / "00001.png", np.zeros((6, 8), dtype=np.uint8))
    with pytest.raises(ValueError, match=r"00001\.png: size 8x6 differs"):
        read_davis_annotations(tmp_path)


def test_read_empty_or_missing_folders(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="no annotations"):
        read_davis_annotations(tmp_path)
    with pytest.raises(ValueError, match="no frames"):
        read_davis_frames(tmp_path)
    with pytest.raises(FileNotFoundError, match="not found"):
        read_davis_frames(tmp_path / "nope")


def test_read_frames_converts_to_rgb_and_checks_sizes(tmp_path: Path) -> None:
    Image.fromarray(np.full((4, 5), 200, dtype=np.uint8)).save(tmp_path / "00000.jpg")
    frames = read_davis_frames(tmp_path)
    assert frames.shape == (1, 4, 5, 3)
    assert np.abs(frames.astype(int) - 200).max() <= 2
    Image.fromarray(np.zeros((5, 5, 3), dtype=np.uint8)).save(tmp_path / "00001.jpg")
    with pytest.raises(ValueError, match=r"00001\.jpg: size"):
        read_davis_frames(tmp_path)
