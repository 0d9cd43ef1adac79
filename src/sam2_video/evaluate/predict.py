"""Inference as SAM2's own VOS evaluation runs it (`tools/vos_inference.py`).

- The model is the config as written, without the notebook builder's postprocessing
  (`build_sam2_video_predictor(..., apply_postprocessing=False)`): no dynamic multimask
  fallback, no hole filling, no binarized click masks in memory.
- One prompt per object on the first frame (mask, a click at the object's centre as SAM2's
  "center" evaluation clicks, or the exact box), then propagation through memory; all
  objects of a clip are tracked together, as the predictor batches them.
- Optionally (vos_inference's `--track_object_appearing_later_in_video`) an object absent
  on frame 0 is prompted on the first frame that shows it and tracked from there; before
  that frame its logits are SAM2's "no object" score. Objects never prompted stay empty.
- Outputs: the low-resolution logits upsampled to the clip's stored size (bilinear), then
  the predictor's non-overlap rule for DAVIS-format output (`non_overlap_masks=true`):
  a pixel belongs to the object with the highest logit, if that logit is above 0.
- On a GPU, bf16 autocast, as vos_inference runs.
- Memory does not grow with the video (rollout.track_video): frames stay uint8 until each
  is encoded, alone, when it is reached, as the predictor encodes them; the memory bank
  keeps only what later frames read; per frame only the low-res logits are kept.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F

from sam2_video.data.clips import Clip
from sam2_video.data.transforms import frames_to_model_input, masks_to_model_size
from sam2_video.model import feature_cache, rollout
from sam2_video.model.recipes import EVAL_PROMPTS

NO_OBJECT_LOGIT = -1024.0  # SAM2's NO_OBJ_SCORE: what the predictor holds for an untracked object
LOW_RES_STRIDE = 4  # SAM2's mask decoder predicts at image_size / 4

# one object's prompt: (frame index, (H, W) bool mask the prompt is derived from)
ObjectPrompt = tuple[int, np.ndarray]


def object_prompts(masks: np.ndarray, track_later_objects: bool = False) -> list[ObjectPrompt]:
    """Each object's prompt from ground truth (T, O, H, W): frame 0, or with
    `track_later_objects` the first frame that shows it. An object without a prompt frame
    gets (-1, empty mask) and is never tracked."""
    prompts = []
    for o in range(masks.shape[1]):
        shown = np.flatnonzero(masks[:, o].reshape(masks.shape[0], -1).any(axis=1))
        start = int(shown[0]) if shown.size and (track_later_objects or shown[0] == 0) else -1
        prompts.append((start, masks[max(start, 0), o]))
    return prompts


class FrameEncoder:
    """A video's image features (rollout.image_features of one frame at a time, resized and
    normalised when encoded), each frame computed once and kept until another frame is
    asked for: trackers that advance frame by frame in lockstep share one encoding, and
    memory does not grow with the video's length."""

    def __init__(self, model, frames: np.ndarray, image_size: int, device: torch.device):
        self.model, self.frames, self.size, self.device = model, frames, image_size, device
        self.frame, self.features = -1, None

    def __call__(self, f: int):
        if f != self.frame:
            image = frames_to_model_input(self.frames[f : f + 1], self.size).to(self.device)
            self.frame, self.features = f, rollout.image_features(self.model, image, False)
        return self.features


def share_encoder(models: Sequence[torch.nn.Module]) -> bool:
    """Whether the models compute the same image features: equal image encoders and mask
    decoder projections (conv_s0/s1), as after fine-tuning only the memory modules."""

    def frozen_part(model) -> dict[str, torch.Tensor]:
        parts = [model.image_encoder, *feature_cache.high_res_projections(model)]
        return {f"{i}.{k}": v for i, m in enumerate(parts) for k, v in m.state_dict().items()}

    first = frozen_part(models[0])
    return all(all(torch.equal(first[k], v) for k, v in frozen_part(m).items()) for m in models[1:])


def non_overlapping_masks(low_res: torch.Tensor, height: int, width: int) -> np.ndarray:
    """(T, O, s, s) logits -> (T, O, H, W) bool: upsampled as the predictor does, each pixel
    given to the highest-scoring object when its logit is above 0."""
    out = np.zeros((low_res.shape[0], low_res.shape[1], height, width), dtype=bool)
    for t, frame in enumerate(low_res):
        up = F.interpolate(frame[:, None], (height, width), mode="bilinear", align_corners=False)
        up = up[:, 0]  # (O, H, W)
        # argmax over a contiguous last axis: over dim 0 torch's CPU kernel is several
        # times slower; the first maximum wins ties either way
        best = up.permute(1, 2, 0).contiguous().argmax(dim=-1)  # (H, W)
        winner = best[None] == torch.arange(up.shape[0])[:, None, None]
        out[t] = ((up > 0) & winner).numpy()
    return out


@torch.inference_mode()
def predict_all(
    models: dict,
    frames: np.ndarray,
    prompts: Sequence[ObjectPrompt],
    kinds: Sequence[str],
    image_size: int,
    device: torch.device | str = "cpu",
    shared_encoder: bool | None = None,
) -> dict[tuple[str, str], np.ndarray]:
    """{(model name, prompt kind): (T, O, H, W) bool non-overlapping predictions} of every
    model with every prompt kind, the objects prompted as `prompts` says (see
    `object_prompts`). All trackers advance one frame at a time together; when the models
    share the encoder (`share_encoder`; a caller scoring many videos with the same models
    passes its answer as `shared_encoder`) each frame is encoded once for all of them. A
    model tracks its objects under every prompt kind as one batch after the prompt frame
    (rollout.track_video's groups): with one kind that is exactly `predict_masks`; with
    several the larger batch may round the last bits differently (bench.eval_batching
    measures how far the scores move)."""
    device = torch.device(device)
    t, h, w = frames.shape[:3]
    side = image_size // LOW_RES_STRIDE
    if shared_encoder is None:
        shared_encoder = len(models) > 1 and share_encoder(list(models.values()))
    first_model = next(iter(models.values()))
    shared = FrameEncoder(first_model, frames, image_size, device) if shared_encoder else None
    starts = sorted({s for s, _ in prompts if s >= 0})
    low_res = {
        (name, kind): torch.full((t, len(prompts), side, side), NO_OBJECT_LOGIT)
        for name in models
        for kind in kinds
    }
    streams = []  # (start frame, tracker, objects): one per model and prompt frame
    for name, model in models.items():
        model.eval()
        encoder = shared or FrameEncoder(model, frames, image_size, device)
        for start in starts:
            objects = [o for o, (s, _) in enumerate(prompts) if s == start]
            first = np.stack([prompts[o][1] for o in objects])  # (K, H, W)
            first = masks_to_model_size(first[None], image_size)[0].to(device)  # (K, S, S)
            features = (encoder(f) for f in range(start, t))
            gen = torch.Generator().manual_seed(0)  # eval prompts draw nothing
            # every prompt kind's K objects in one batch: rows kind by kind
            groups = [(kind, first) for kind in kinds]
            tracked = rollout.track_video(model, features, groups, EVAL_PROMPTS, gen, start, t)
            streams.append((start, tracked, [low_res[name, kind] for kind in kinds], objects))
    with torch.autocast(device.type, torch.bfloat16, enabled=device.type == "cuda"):
        for f in range(t):
            for start, tracked, outs, objects in streams:
                if f >= start:
                    rows = next(tracked).low_res_logits[:, 0].float().cpu()  # (kinds * K, s, s)
                    for out, kind_rows in zip(outs, rows.split(len(objects)), strict=True):
                        out[f, objects] = kind_rows
    return {key: non_overlapping_masks(logits, h, w) for key, logits in low_res.items()}


def predict_masks(
    model,
    frames: np.ndarray,
    prompts: Sequence[ObjectPrompt],
    prompt: str,
    image_size: int,
    device: torch.device | str = "cpu",
) -> np.ndarray:
    """Track objects through `frames` (T, H, W, 3) uint8 from one prompt each (see
    `object_prompts`; `prompt` is the kind: mask, points or box). Returns (T, O, H, W) bool,
    non-overlapping."""
    return predict_all({"model": model}, frames, prompts, (prompt,), image_size, device)[
        "model", prompt
    ]


def predict_clip(
    model, clip: Clip, prompt: str, image_size: int, device="cpu", track_later_objects=False
) -> np.ndarray:
    """(T, O, H, W) bool predictions for a clip, prompted from its ground truth."""
    prompts = object_prompts(clip.masks, track_later_objects)
    return predict_masks(model, clip.frames, prompts, prompt, image_size, device)
