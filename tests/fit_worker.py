"""Train the tiny model for a few steps on in-memory clips; run directly or under torchrun.

Used by test_fit.py to compare a 2-process gloo DDP run with a 1-process run on the same
global batch, and (DEVICE cuda: NCCL, a GPU per process) to run DDP on GPUs.
Usage: fit_worker.py OUT.pt STEPS PER_PROCESS_BATCH CHECKPOINT [DEVICE: cpu (default) or cuda]
"""

from __future__ import annotations

import dataclasses
import sys
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist

from sam2_video import fit
from sam2_video.data.clips import Clip
from sam2_video.data.loader import FixedClips
from sam2_video.model import build
from sam2_video.model.recipes import EVAL_PROMPTS, SAM21_MOSE_LOSSES
from sam2_video.params import Params, defaults


def make_clips(n: int) -> list[Clip]:
    rng = np.random.default_rng(0)
    clips = []
    for i in range(n):
        frames = rng.integers(0, 255, size=(3, 64, 64, 3), dtype=np.uint8)
        masks = np.zeros((3, 2, 64, 64), bool)
        for t in range(3):
            masks[t, 0, 10 + 2 * t : 30 + 2 * t, 8:28] = True
            masks[t, 1, 36:56, 30 + 3 * t : 50 + 3 * t] = True
        keys = tuple(f"c{i}/{t:05d}" for t in range(3))  # a video's frames: cacheable
        clips.append(Clip(f"c{i}", frames, masks, (1, 2), keys))
    return clips


def settings(steps: int, batch: int, feature_cache_mb: int = 64) -> Params:
    """Every train setting given, so that these tests do not move when a default in params.py
    does: a mask prompt on frame 0 (the evaluation protocol's prompts), SAM2.1's focal loss
    (a recipe's fields are the train keys of the same names)."""
    train = dataclasses.replace(
        defaults().train,
        steps=steps,
        batch_size=batch,
        grad_accum=1,
        weight_decay=0.0,
        warmup_steps=1,
        min_lr_ratio=0.1,
        grad_clip=0.0,
        image_size=64,
        lr_scale={},
        **dataclasses.asdict(EVAL_PROMPTS),
        **dataclasses.asdict(SAM21_MOSE_LOSSES),
        amp=False,
        num_workers=0,
        checkpoint_every=1,
        val_every=1000,
        val_clips=1,
        early_stop_patience=0,
        feature_cache_mb=feature_cache_mb,
        memory_as_predictor=True,
    )
    return dataclasses.replace(defaults(), lr=1e-3, seed=0, train=train)


def tiny_model() -> torch.nn.Module:
    cfg = build.load_model_config("tiny", image_size=64)
    for attn in ("self_attention", "cross_attention"):
        cfg.model.memory_attention.layer[attn].dropout = 0.0
    cfg.model.memory_attention.layer.dropout = 0.0  # identical math however objects are split
    torch.manual_seed(0)  # parameter init only
    model = build.build_model(cfg)
    build.set_trainable(model, ["memory_attention", "memory_encoder"])
    return model


def main() -> None:
    out, steps, batch, checkpoint = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
    # as the train stage: under torchrun a process group, gloo on the CPU, nccl on GPUs
    device, _, world = fit.setup_process(sys.argv[5] if len(sys.argv) > 5 else "cpu")
    torch.use_deterministic_algorithms(device.type == "cpu")
    model = tiny_model()
    clips = make_clips(4)
    s = settings(steps, batch)
    fingerprint = fit.fingerprint(s, str(world))
    # no train-time validation: the trained (last) weights are what the callers compare
    fit.fit(model, FixedClips(clips), None, s, Path(checkpoint), None, device, fingerprint)
    if not dist.is_initialized() or dist.get_rank() == 0:
        torch.save(fit.trainable_state(model), out)
    if dist.is_initialized():
        dist.destroy_process_group()


if __name__ == "__main__":
    main()
