"""Parity tool: our inference vs SAM2VideoPredictor built as SAM2's vos_inference.py does."""

from __future__ import annotations

import numpy as np
import pytest
from hydra import compose
from stored import make_videos, store

from sam2_video import cli
from sam2_video.data.clips import Clip
from sam2_video.data.sources import synthetic
from sam2_video.evaluate import parity
from sam2_video.evaluate.run import load_model
from sam2_video.model import build


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    folder = tmp_path_factory.mktemp("model")
    build.save_model_config(build.load_model_config("tiny"), folder / "sam2_model.yaml")
    (folder / "sam2_finetuned.pt").write_bytes(build.tiny_base_weights_path().read_bytes())
    return folder


def _clips(count: int) -> list[Clip]:
    rng = np.random.default_rng(7)
    clips = []
    for i in range(count):
        scene = synthetic.render_scene(rng, synthetic.DOMAINS["target"], 6, 3, 128)
        present = np.flatnonzero(scene.visible[0].reshape(3, -1).sum(1) > 16)
        masks = scene.visible[:, present]
        clips.append(Clip(f"v{i}__00000", scene.frames, masks, tuple(range(1, len(present) + 1))))
    return clips


def test_predictor_is_built_as_vos_inference_builds_it(model_dir):
    predictor = parity.vos_inference_predictor(
        model_dir / "sam2_model.yaml", model_dir / "sam2_finetuned.pt"
    )
    assert type(predictor).__name__ == "SAM2VideoPredictor"
    assert predictor.non_overlap_masks  # DAVIS-format output: one object a pixel
    # apply_postprocessing=False: none of the notebook builder's overrides
    assert predictor.fill_hole_area == 0 and not predictor.binarize_mask_from_pts_for_mem_enc
    assert not predictor.sam_mask_decoder.dynamic_multimask_via_stability
    # sam2's own configs still compose afterwards (its Hydra search path is restored)
    assert "model" in compose(config_name="configs/sam2.1/sam2.1_hiera_t.yaml")


def test_compare_clips_per_object_j_agrees(model_dir):
    clips = _clips(2)
    config, checkpoint = model_dir / "sam2_model.yaml", model_dir / "sam2_finetuned.pt"
    model, image_size = load_model(config, checkpoint)
    predictor = parity.vos_inference_predictor(config, checkpoint)
    js = parity.compare_clips(model, predictor, clips, image_size)
    assert sorted(js) == [c.name for c in clips]
    for clip in clips:
        assert js[clip.name].shape == (2, clip.num_objects)
        np.testing.assert_allclose(js[clip.name][0], js[clip.name][1], atol=0.01)
    assert 0.05 < np.concatenate([j[0] for j in js.values()]).mean() < 0.99  # not trivial


def test_cli_parity_reports_and_passes(model_dir, tmp_path, capsys):
    store(make_videos(tmp_path / "raw", 2, 6, size=(96, 128)), tmp_path / "val", clip_length=6)
    args = ["parity", "--model-dir", str(model_dir), "--shards", str(tmp_path / "val")]
    assert cli.main(args) == 0
    out = capsys.readouterr().out
    assert "2 clips, mean J over objects" in out and "within 0.01" in out
    assert cli.main([*args, "--tolerance", "-1"]) == 1  # any gap is above a negative bound


def test_late_objects_are_prompted_on_their_first_frame_on_both_sides(model_dir):
    """vos_inference's --track_object_appearing_later_in_video: an object entering on frame
    2 is prompted there by SAM2VideoPredictor too, and both agree on it."""
    clip = _clips(1)[0]
    masks = clip.masks.copy()
    masks[:2, -1] = False  # the last object enters on frame 2
    late = Clip("late", clip.frames, masks, clip.object_ids)
    config, checkpoint = model_dir / "sam2_model.yaml", model_dir / "sam2_finetuned.pt"
    model, image_size = load_model(config, checkpoint)
    predictor = parity.vos_inference_predictor(config, checkpoint)
    js = parity.compare_clips(model, predictor, [late], image_size, track_later_objects=True)
    np.testing.assert_allclose(js["late"][0], js["late"][1], atol=0.01)
    assert js["late"][1, -1] > 0.3  # tracked from frame 2, not left empty


def test_cli_parity_on_whole_videos_exports_the_stored_bytes(model_dir, tmp_path, capsys):
    store(
        make_videos(tmp_path / "raw", 2, 7, size=(96, 128)),
        tmp_path / "val",
        clip_length=4,
        val_windows=False,
    )
    args = ["parity", "--model-dir", str(model_dir), "--shards", str(tmp_path / "val")]
    assert cli.main([*args, "--max-clips", "1"]) == 0
    assert "1 clips, mean J over objects" in capsys.readouterr().out
