import numpy as np
from PIL import Image

from sam2_video import render
from sam2_video.data.davis import davis_palette


def test_overlay_blends_each_object_with_its_palette_colour():
    frame = np.zeros((4, 4, 3), np.uint8)
    masks = np.zeros((2, 4, 4), bool)
    masks[0, 0, 0] = masks[1, 3, 3] = True
    out = render.overlay(frame, masks, alpha=1.0)
    palette = np.asarray(davis_palette()).reshape(-1, 3)
    assert out[0, 0].tolist() == palette[1].tolist()
    assert out[3, 3].tolist() == palette[2].tolist()
    assert out[1, 1].tolist() == [0, 0, 0]


def test_gif_has_one_frame_per_clip_frame_and_three_panels(tmp_path):
    t, h, w = 5, 8, 10
    frames = np.full((t, h, w, 3), 128, np.uint8)
    masks = np.zeros((t, 1, h, w), bool)
    images = render.comparison_frames(frames, [masks, masks, masks], scale=3)
    path = tmp_path / "clip.gif"
    render.write_gif(images, path, fps=4)
    with Image.open(path) as gif:
        assert gif.n_frames == t
        assert gif.size == (3 * w * 3, h * 3)
