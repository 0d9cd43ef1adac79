"""Our inference equals SAM2's own SAM2VideoPredictor on the same clip and prompts."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from sam2_video.data.sources import synthetic
from sam2_video.evaluate import metrics
from sam2_video.evaluate.predict import predict_masks
from sam2_video.model import build, prompts


@pytest.fixture(scope="module")
def clip(tmp_path_factory):
    """A target-domain clip written as JPEGs (what the predictor reads) and read back."""
    rng = np.random.default_rng(3)
    scene = synthetic.render_scene(rng, synthetic.DOMAINS["target"], 6, 3, 128)
    folder = tmp_path_factory.mktemp("frames")
    for t, frame in enumerate(scene.frames):
        Image.fromarray(frame).save(folder / f"{t:05d}.jpg", quality=95)
    frames = np.stack([np.asarray(Image.open(p).convert("RGB")) for p in sorted(folder.iterdir())])
    present = np.flatnonzero(scene.visible[0].reshape(3, -1).any(1))
    return folder, frames, scene.visible[:, present]


@pytest.fixture(scope="module")
def models():
    cfg = build.load_model_config("tiny")
    ours = build.build_model(cfg)
    build.load_checkpoint(ours, build.tiny_base_weights_path())
    theirs = build.build_model(cfg, target=build.VIDEO_PREDICTOR_TARGET)
    build.load_checkpoint(theirs, build.tiny_base_weights_path())
    return ours.eval(), theirs.eval()


def _sam2_predictor_masks(predictor, folder, first: np.ndarray, prompt: str) -> np.ndarray:
    state = predictor.init_state(video_path=str(folder))
    first_t = torch.from_numpy(first)
    for k in range(first.shape[0]):
        if prompt == "mask":
            predictor.add_new_mask(state, frame_idx=0, obj_id=k + 1, mask=first[k])
        elif prompt == "box":
            box, _ = prompts.box_prompts(first_t[k : k + 1], 0.0, torch.Generator())
            predictor.add_new_points_or_box(state, frame_idx=0, obj_id=k + 1,
                                            box=box[0].reshape(-1).numpy())  # fmt: skip
        else:
            xy = prompts.center_points(first_t[k : k + 1])[0].numpy()
            predictor.add_new_points_or_box(state, frame_idx=0, obj_id=k + 1, points=xy,
                                            labels=np.array([1], np.int32))  # fmt: skip
    out = {}
    for frame_idx, _, video_res_masks in predictor.propagate_in_video(state):
        out[frame_idx] = (video_res_masks[:, 0] > 0).cpu().numpy()
    return np.stack([out[t] for t in sorted(out)])


@pytest.mark.parametrize("prompt", ["mask", "points", "box"])
def test_j_matches_sam2_video_predictor(clip, models, prompt):
    folder, frames, gt = clip
    ours_model, predictor = models
    ours = predict_masks(ours_model, frames, gt[0], prompt, image_size=128)
    with torch.inference_mode():
        theirs = _sam2_predictor_masks(predictor, folder, gt[0], prompt)
    j_ours = metrics.score_clip(gt, ours)["j"].mean()
    j_theirs = metrics.score_clip(gt, theirs)["j"].mean()
    print(prompt, j_ours, j_theirs)
    assert abs(j_ours - j_theirs) <= 0.02, (j_ours, j_theirs)
