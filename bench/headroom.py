"""What can fine-tuning the memory gain on this base? Tracking J against a memory-free ceiling.

`python -m bench.headroom CHECKPOINT [--trained RESUME] [--clips N]`, in a workspace after
`dvc repro` (its data/model/sam2_model.yaml and validation shards): for the objects on the
first frame of the first N validation videos, J per frame of

- tracking: the mask prompt on frame 0, then memory (as evaluate predicts);
- per-frame box: the object's exact box (evaluate's box prompt) given on every frame to the
  image predictor (SAM2ImagePredictor: prompt encoder and mask decoder, no memory).

Fine-tuning trains the memory modules only; what the frozen encoder and decoder make of a
target frame given a perfect box is roughly what a memory can reach (not a strict bound: the
first frame's mask tells more than a box), so the gap between the two rows is about what
fine-tuning can gain. `--trained` puts the train stage's resumable weights
(data/checkpoints/resume.pt) over the base, to see how much of the gap training closed.
Prints both means per span of frames (frame 0 is the prompt) and over frames 1..T-2, the
frames evaluate scores, and over those frames by how much of the object is in view.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch
from sam2.sam2_image_predictor import SAM2ImagePredictor

from bench.split_scores import last_step_model
from sam2_video.data.shards import ShardReader
from sam2_video.evaluate import run
from sam2_video.evaluate.metrics import frame_scores, region_j
from sam2_video.evaluate.predict import predict_clip
from sam2_video.model.prompts import box_prompts

CONFIG, VAL = Path("data/model/sam2_model.yaml"), Path("data/shards/val")


def image_predictor(model, image_size: int) -> SAM2ImagePredictor:
    predictor = SAM2ImagePredictor(model)
    # its backbone feature sizes are written for 1024 px input; the encoder's strides are 4, 8, 16
    predictor._bb_feat_sizes = [(image_size // s, image_size // s) for s in (4, 8, 16)]
    return predictor


def box_j(predictor: SAM2ImagePredictor, frames: np.ndarray, masks: np.ndarray) -> np.ndarray:
    """(T, O) J of one box prompt per frame and object (NaN where the object is absent);
    frames (T, H, W, 3), masks (T, O, H, W)."""
    j = np.full(masks.shape[:2], np.nan)
    for t, frame in enumerate(frames):
        predictor.set_image(frame)
        # the box prompt evaluate gives (no jitter: the generator draws nothing that counts)
        boxes, _ = box_prompts(torch.from_numpy(masks[t]), 0.0, torch.Generator())  # (O, 2, 2)
        for o, mask in enumerate(masks[t]):
            if not mask.any():
                continue
            pred = predictor.predict(box=boxes[o].flatten().numpy(), multimask_output=False)
            j[t, o] = region_j(mask, pred[0][0] > 0)
    return j


def clip_rows(model, predictor, clip, image_size: int) -> tuple[np.ndarray, ...]:
    """(T, O') tracking J, per-frame box J and visible area relative to frame 0's of the
    clip's objects on frame 0; J is NaN where the object is absent."""
    on_first = clip.masks[0].any(axis=(1, 2))
    masks = clip.masks[:, on_first]  # (T, O', H, W)
    pred = predict_clip(model, clip, "mask", image_size)[:, on_first]
    present = masks.any(axis=(2, 3))
    tracking = np.where(present, frame_scores(masks, pred)["j"], np.nan)
    area = masks.sum(axis=(2, 3)) / masks[0].sum(axis=(1, 2))  # (T, O')
    return tracking, box_j(predictor, clip.frames, masks), area


# Visible area over frame 0's: cut by the frame edge, the occluder or another object (< 1),
# or more of it in view than on frame 0 (> 1).
AREA_BINS = ((0.0, 0.25), (0.25, 0.5), (0.5, 0.75), (0.75, 1.0), (1.0, np.inf))


def by_visible_area(tracking, box, area) -> list[str]:
    """Per AREA_BINS bin of the scored object-frames (object present): count and mean J."""
    present = ~np.isnan(box)
    lines = []
    for lo, hi in AREA_BINS:
        cell = present & (area > lo) & (area <= hi)
        track, ceiling = (
            values[cell].mean() if cell.any() else np.nan for values in (tracking, box)
        )
        lines.append(
            f"visible area {lo:.2f}-{hi:.2f} of frame 0's: {cell.sum():4d} object-frames, "
            f"tracking {track:.3f}  per-frame box {ceiling:.3f}"
        )
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("checkpoint", type=Path, help="the base, e.g. data/raw/base_checkpoint.pt")
    parser.add_argument("--trained", type=Path, help="train's resume.pt, put over the base")
    parser.add_argument("--clips", type=int, default=48, help="validation videos scored")
    args = parser.parse_args()
    torch.set_num_threads(1)
    if args.trained is None:
        model, image_size = run.load_model(CONFIG, args.checkpoint)
    else:
        model, image_size = last_step_model(args.checkpoint, args.trained)
    predictor = image_predictor(model, image_size)
    with ShardReader(VAL) as reader:
        rows = [clip_rows(model, predictor, reader[i], image_size) for i in range(args.clips)]
    # each (T, objects): every clip's rows side by side
    tracking, box, area = (np.concatenate(parts, axis=1) for parts in zip(*rows, strict=True))
    length = tracking.shape[0]
    print(f"{tracking.shape[1]} objects on frame 0 of {args.clips} videos: mean J")
    for start in range(1, length, 4):
        span = slice(start, min(start + 4, length))
        print(
            f"frames {start:>2}-{span.stop - 1:>2}: tracking {np.nanmean(tracking[span]):.3f}"
            f"  per-frame box {np.nanmean(box[span]):.3f}"
        )
    scored = slice(1, length - 1)
    track, ceiling = np.nanmean(tracking[scored]), np.nanmean(box[scored])
    print(
        f"scored frames: tracking {track:.3f}, per-frame box {ceiling:.3f}, "
        f"gap {ceiling - track:+.3f}"
    )
    print("\n".join(by_visible_area(tracking[scored], box[scored], area[scored])))


if __name__ == "__main__":
    main()
