"""Frame pixels: stored orientation, modes converted to RGB, sizes kept within max_side."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from sam2_video.data.sources import frames

H, W = 40, 60


def test_target_size_hand_values() -> None:
    assert frames.target_size(40, 60, 30) == (20, 30)
    assert frames.target_size(481, 640, 512) == (385, 512)  # 384.8 rounds up
    assert frames.target_size(640, 3, 64) == (64, 1)  # never below one pixel
    assert frames.target_size(10, 20, 64) == (10, 20)  # no upscaling
    assert frames.target_size(10, 20, None) == (10, 20)


def test_file_safe_names() -> None:
    assert frames.file_safe_name("vidéo 1/ü") == "vid_o_1__"
    assert frames.file_safe_name(".hidden") == "_.hidden"
    assert frames.file_safe_name("") == "_"


def test_wrong_size_names_the_file_and_both_sizes(tmp_path: Path) -> None:
    Image.new("RGB", (W, H)).save(tmp_path / "a.png")
    with pytest.raises(
        ValueError, match=r"a.png: image is 40x60 \(HxW\) but its annotations say 41x60"
    ):
        frames.read_rgb(tmp_path / "a.png", (H + 1, W))


def test_image_modes_become_rgb(tmp_path: Path) -> None:
    rng = np.random.default_rng(2)
    gray = rng.integers(0, 256, (H, W), dtype=np.uint8)
    rgba = rng.integers(0, 256, (H, W, 4), dtype=np.uint8)
    cmy = rng.integers(0, 256, (H, W, 3), dtype=np.uint8)
    Image.fromarray(gray).save(tmp_path / "gray.png")
    Image.fromarray(rgba).save(tmp_path / "rgba.png")
    cmyk = np.concatenate([cmy, np.zeros((H, W, 1), np.uint8)], axis=-1)
    Image.fromarray(cmyk, mode="CMYK").save(tmp_path / "cmyk.tif")
    Image.fromarray(cmyk, mode="CMYK").save(tmp_path / "cmyk.jpg")
    expected = {
        "gray.png": np.repeat(gray[..., None], 3, axis=-1),
        "rgba.png": rgba[..., :3],
        "cmyk.tif": 255 - cmy,  # with K = 0, RGB = 255 - CMY
    }
    for name, rgb in expected.items():
        out = frames.read_rgb(tmp_path / name, (H, W))
        assert out.dtype == np.uint8 and out.shape == (H, W, 3), name
        np.testing.assert_array_equal(out, rgb)
    assert frames.read_rgb(tmp_path / "cmyk.jpg", (H, W)).shape == (H, W, 3)


def test_exif_orientation_is_not_applied(tmp_path: Path) -> None:
    pixels = np.zeros((H, W, 3), np.uint8)
    pixels[:5, :5] = 255  # a marker in the stored top-left corner
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 CW to display"
    Image.fromarray(pixels).save(tmp_path / "rotated.jpg", exif=exif, quality=95)
    out = frames.read_rgb(tmp_path / "rotated.jpg", (H, W))
    assert out.shape == (H, W, 3)
    assert out[:5, :5].mean() > 200 and out[-5:, -5:].mean() < 50
