"""pretrain, the video stage: train the tiny base from scratch (pretrain/dvc.yaml).

Runs in pretrain/ (`dvc repro pretrain/dvc.yaml`, or `make tiny-base`): reads the recipe
from params.yaml there, writes tiny_video.pt (float16, tracked by git and recorded in
pretrain/dvc.lock), the `joint` stage's starting point, and video_metrics.json
(source-domain J&F per prompt at each validation). A run that ends below `min_source_jf`
writes nothing and fails.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

from sam2_video import pretrain
from sam2_video.errors import run_stage
from sam2_video.params import load_pretrain_params

PARAMS, METRICS, WEIGHTS = Path("params.yaml"), Path("video_metrics.json"), Path("tiny_video.pt")


def main() -> None:
    p = load_pretrain_params(PARAMS)
    torch.set_num_threads(p.threads)
    model, history = pretrain.pretrain(p, report=lambda r: print(json.dumps(r), flush=True))
    final = pretrain.finish(model, history, p, WEIGHTS, METRICS, PARAMS)
    print(f"pretrain: wrote {WEIGHTS} ({WEIGHTS.stat().st_size / 1e6:.1f} MB), {final}")


if __name__ == "__main__":
    run_stage("pretrain", main)
