"""Evaluation with every prompt kind in one batch against one kind at a time (issue 23).

`python -m bench.eval_batching [--clips N]` scores the default run's validation clips
(data/shards/val, after `dvc repro`) with its base and fine-tuned models, one thread, in
two ways, clip by clip, alternating:

- per kind: `predict_all` once per prompt kind — each tracker exactly as
  SAM2VideoPredictor computes it (tests/test_parity.py);
- batched: `predict_all` with all kinds, as the evaluate stage runs: a model's objects
  under the three prompts tracked as one batch after the prompt frame.

Prints seconds per clip each way and their ratio, then per model and prompt the mean J&F
both ways and the largest per-object difference, and the share of predicted pixels that
differ. Batching changes only float rounding; the issue allows it where the mean J stays
within 0.005.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import torch

from sam2_video.data.shards import ShardReader
from sam2_video.evaluate import metrics, run
from sam2_video.evaluate.predict import object_prompts, predict_all

KINDS = ("mask", "points", "box")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clips", type=int, default=64, help="validation clips to score")
    args = parser.parse_args()
    torch.set_num_threads(1)
    reader = ShardReader(Path("data/shards/val"))
    config = Path("data/model/sam2_model.yaml")
    base, size = run.load_model(config, Path("data/raw/base_checkpoint.pt"))
    tuned, _ = run.load_model(config, Path("data/model/sam2_finetuned.pt"))
    models = {"base": base, "finetuned": tuned}
    seconds = {"per kind": 0.0, "batched": 0.0}
    jf = {way: {} for way in seconds}
    differing = total = 0
    count = min(args.clips, len(reader))
    for i in range(count):
        clip = reader[i]
        prompts = object_prompts(clip.masks, track_later_objects=True)
        start = time.perf_counter()
        per_kind = {}
        for kind in KINDS:
            per_kind |= predict_all(models, clip.frames, prompts, (kind,), size, "cpu", True)
        seconds["per kind"] += time.perf_counter() - start
        start = time.perf_counter()
        batched = predict_all(models, clip.frames, prompts, KINDS, size, "cpu", True)
        seconds["batched"] += time.perf_counter() - start
        for way, preds in (("per kind", per_kind), ("batched", batched)):
            for key, pred in preds.items():
                jf[way].setdefault(key, []).extend(metrics.score_clip(clip.masks, pred)["jf"])
        for key in batched:
            differing += int((batched[key] != per_kind[key]).sum())
            total += batched[key].size
    per_clip = {way: s / count for way, s in seconds.items()}
    print(f"{count} clips, 1 thread, both models, prompts {', '.join(KINDS)}")
    print(
        f"seconds per clip: per kind {per_clip['per kind']:.3f}, batched "
        f"{per_clip['batched']:.3f}, ratio {per_clip['per kind'] / per_clip['batched']:.2f}x"
    )
    print("| model | prompt | mean J&F per kind | batched | difference | largest per object |")
    print("|---|---|---|---|---|---|")
    for key in jf["batched"]:
        a, b = np.asarray(jf["per kind"][key]), np.asarray(jf["batched"][key])
        row = f"{a.mean():.4f} | {b.mean():.4f} | {b.mean() - a.mean():+.5f} | "
        print(f"| {key[0]} | {key[1]} | {row}{np.abs(b - a).max():.4f} |")
    print(f"predicted pixels that differ: {differing} of {total} ({differing / total:.2e})")


if __name__ == "__main__":
    main()
