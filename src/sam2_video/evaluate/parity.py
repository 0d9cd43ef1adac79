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
def vos_inference_masks(
    predictor, jpeg_dir: Path, prompts: list[tuple[int, np.ndarray]], shape: tuple[int, ...]
) -> np.ndarray:
    """(T, O, H, W) bool: vos_inference's `vos_inference` for one video, object k + 1
    prompted by its mask on frame prompts[k][0] (with
    --track_object_appearing_later_in_video, the first frame showing it); an object with
    start -1 is never prompted and stays empty, as are frames before its prompt.

    Objects that start on the same frame are propagated together from there; SAM2
    (1.x) keeps each object's memory apart, so this is the joint propagation's result per
    object, and the predictor's CPU path, which mixes its bf16 memory with float32 when an
    object is added after the first frame, is avoided. The non-overlap rule is applied
    across all objects, as the predictor's `non_overlap_masks` does."""
    state = predictor.init_state(video_path=str(jpeg_dir), async_loading_frames=False)
    logits = np.full(shape, -np.inf, dtype=np.float32)  # (T, O, H, W)
    for start in sorted({s for s, _ in prompts if s >= 0}):
        predictor.reset_state(state)
        for k, (s, mask) in enumerate(prompts):
            if s == start:
                predictor.add_new_mask(state, frame_idx=start, obj_id=k + 1, mask=mask)
        for frame_idx, obj_ids, out in predictor.propagate_in_video(state, start):
            for obj_id, obj_logits in zip(obj_ids, out[:, 0].float().cpu().numpy(), strict=True):
                logits[frame_idx, obj_id - 1] = obj_logits
    winner = logits.argmax(axis=1)[:, None] == np.arange(shape[1])[None, :, None, None]
    return (logits > 0) & winner


def per_object_j(
    model,
    predictor,
    clip: Clip,
    image_size: int,
    work_dir: Path,
    track_later_objects: bool,
    frame_files=None,
) -> np.ndarray:
    """(2, O) per-object J of a clip (mask prompt): row 0 ours, row 1 SAM2VideoPredictor's,
    on the exported frames (with `frame_files`, ShardReader.stored_files: the stored JPEG
    bytes as they are, so both see exactly the pixels evaluate saw)."""
    write_davis_clip(work_dir, clip.name, clip.frames, clip.masks, clip.object_ids, frame_files)
    exported = read_davis_frames(work_dir / "JPEGImages" / clip.name)  # (T, H, W, 3)
    clip = replace(clip, frames=exported)
    ours = predict_clip(model, clip, "mask", image_size, track_later_objects=track_later_objects)
    prompts = object_prompts(clip.masks, track_later_objects)
    jpeg_dir = work_dir / "JPEGImages" / clip.name
    theirs = vos_inference_masks(predictor, jpeg_dir, prompts, ours.shape)
    return np.stack([metrics.score_clip(clip.masks, p)["j"] for p in (ours, theirs)])


def compare_clips(
    model, predictor, clips, image_size: int, track_later_objects: bool = True, files=None
) -> dict[str, np.ndarray]:
    """{clip name: (2, O) per-object J, ours and SAM2VideoPredictor's}; files: per clip,
    its stored frame files (ShardReader.stored_files) or None."""
    files = files if files is not None else [None] * len(clips)
    with tempfile.TemporaryDirectory() as tmp:
        return {
            c.name: per_object_j(model, predictor, c, image_size, Path(tmp), track_later_objects, f)
            for c, f in zip(clips, files, strict=True)
        }
