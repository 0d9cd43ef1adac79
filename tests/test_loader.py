import numpy as np
import torch
from PIL import Image
from sam2.utils.misc import _load_img_as_tensor

from sam2_video.data import transforms
from sam2_video.data.clips import Clip
from sam2_video.data.loader import batch_indices, collate


def test_one_epoch_of_steps_visits_every_clip_once():
    seen = [i for step in range(5) for i in batch_indices(10, 2, step, seed=3)]
    assert sorted(seen) == list(range(10))


def test_batches_are_a_pure_function_of_step():
    assert batch_indices(10, 2, 7, seed=3) == batch_indices(10, 2, 7, seed=3)
    assert batch_indices(10, 2, 7, seed=3) != batch_indices(10, 2, 7, seed=4)


def test_ranks_split_the_global_batch_without_overlap():
    r0 = batch_indices(12, 3, 1, seed=0, rank=0, world_size=2)
    r1 = batch_indices(12, 3, 1, seed=0, rank=1, world_size=2)
    single = batch_indices(12, 6, 1, seed=0)
    assert r0 + r1 == single


def test_collate_flattens_objects_of_all_clips():
    def clip(name, n_obj):
        frames = np.zeros((3, 16, 32, 3), np.uint8)
        masks = np.zeros((3, n_obj, 16, 32), bool)
        masks[:, :, 4:12, 8:24] = True
        return Clip(name, frames, masks, tuple(range(n_obj)))

    batch = collate([clip("a", 2), clip("b", 1)], image_size=32)
    assert batch.frames.shape == (2, 3, 3, 32, 32)
    assert batch.gt.shape == (3, 3, 32, 32)
    assert batch.obj_to_clip.tolist() == [0, 0, 1]
    # the 16 x 32 frame is stretched to 32 x 32: rows 4..12 become 8..24
    assert batch.gt[0, 0, 8:24, 8:24].all() and not batch.gt[0, 0, :6].any()
    assert batch.frames.dtype == torch.uint8  # normalised where the step runs


def test_normalised_batch_frames_equal_the_predictors_model_input(tmp_path):
    """uint8 through the workers, normalised later: the same floats as normalising at once,
    and as SAM2's own video loader makes them from the frame files."""
    rng = np.random.default_rng(0)
    frames = rng.integers(0, 256, (2, 20, 36, 3), dtype=np.uint8)
    clip = Clip("c", frames, np.ones((2, 1, 20, 36), bool), (1,))
    normalised = transforms.normalize(collate([clip], image_size=32).frames)[0]  # (T, 3, S, S)
    assert torch.equal(normalised, transforms.frames_to_model_input(frames, 32))
    mean = torch.tensor(transforms.IMAGENET_MEAN).view(3, 1, 1)
    std = torch.tensor(transforms.IMAGENET_STD).view(3, 1, 1)
    for t, rgb in enumerate(frames):
        Image.fromarray(rgb).save(tmp_path / f"{t}.png")
        theirs, _, _ = _load_img_as_tensor(tmp_path / f"{t}.png", 32)  # (3, S, S) float64
        expected = (theirs.float() - mean) / std  # load_video_frames: float32, then mean/std
        torch.testing.assert_close(normalised[t], expected, rtol=0, atol=1e-5)
