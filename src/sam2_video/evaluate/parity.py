"""Parity with SAM2's own VOS evaluation: our `evaluate` vs `SAM2VideoPredictor`.

The reference side is what `tools/vos_inference.py` does: the predictor built by
`build_sam2_video_predictor(..., apply_postprocessing=False)` with
`++model.non_overlap_masks=true`, fed the clip's frames as exported JPEGs, each object's
mask added on frame 0, `propagate_in_video`, masks at logit > 0. Our side is
`predict_clip` on the same pixels (the exported JPEGs read back, so that JPEG's loss is no
part of the comparison). Both are scored with the same per-object J.
"""

from __future__ import annotations

import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

from sam2_video.data.clips import Clip
from sam2_video.data.davis import read_davis_frames, write_davis_clip
from sam2_video.evaluate import metrics
from sam2_video.evaluate.predict import object_prompts, predict_clip


@contextmanager
def _hydra_config_dir(folder: Path) -> Iterator[None]:
    """Let sam2's builder compose a config file outside its package, then give sam2 back
    its own Hydra search path."""
    from hydra import initialize_config_dir, initialize_config_module
    from hydra.core.global_hydra import GlobalHydra

    GlobalHydra.instance().clear()
    try:
        with initialize_config_dir(config_dir=str(folder.resolve()), version_base="1.2"):
            yield
    finally:
        GlobalHydra.instance().clear()
        initialize_config_module("sam2", version_base="1.2")


def vos_inference_predictor(
    config_path: Path, checkpoint: Path, device="cpu", apply_postprocessing: bool = False
):
    """SAM2VideoPredictor built exactly as tools/vos_inference.py builds it (with
    `apply_postprocessing`: as SAM2's notebooks build it, to see what that changes)."""
    from sam2.build_sam import build_sam2_video_predictor

    with _hydra_config_dir(config_path.parent):
        return build_sam2_video_predictor(
            config_file=config_path.name,
            ckpt_path=str(checkpoint),
            device=str(device),
            apply_postprocessing=apply_postprocessing,
            hydra_overrides_extra=["++model.non_overlap_masks=true"],
        )


@torch.inference_mode()
def vos_inference_masks(predictor, jpeg_dir: Path, first_masks: np.ndarray) -> np.ndarray:
    """(T, O, H, W) bool: vos_inference's `vos_inference` for one video, objects 1..O
    prompted by their frame-0 masks (O, H, W)."""
    state = predictor.init_state(video_path=str(jpeg_dir), async_loading_frames=False)
    for k, mask in enumerate(first_masks):
        predictor.add_new_mask(state, frame_idx=0, obj_id=k + 1, mask=mask)
    out = {}
    for frame_idx, _, logits in predictor.propagate_in_video(state):
        out[frame_idx] = (logits[:, 0] > 0).cpu().numpy()
    return np.stack([out[t] for t in sorted(out)])


def per_object_j(model, predictor, clip: Clip, image_size: int, work_dir: Path) -> np.ndarray:
    """(2, O) per-object J of a clip (mask prompt): row 0 ours, row 1 SAM2VideoPredictor."""
    write_davis_clip(work_dir, clip.name, clip.frames, clip.masks, clip.object_ids)
    exported = read_davis_frames(work_dir / "JPEGImages" / clip.name)  # (T, H, W, 3)
    ours = predict_clip(model, replace(clip, frames=exported), "mask", image_size)
    tracked = [o for o, (start, _) in enumerate(object_prompts(clip.masks)) if start == 0]
    theirs = np.zeros_like(ours)
    first = clip.masks[0, tracked]
    theirs[:, tracked] = vos_inference_masks(predictor, work_dir / "JPEGImages" / clip.name, first)
    return np.stack([metrics.score_clip(clip.masks, p)["j"] for p in (ours, theirs)])


def compare_clips(model, predictor, clips, image_size: int) -> dict[str, np.ndarray]:
    """{clip name: (2, O) per-object J, ours and SAM2VideoPredictor's}."""
    with tempfile.TemporaryDirectory() as tmp:
        return {c.name: per_object_j(model, predictor, c, image_size, Path(tmp)) for c in clips}
