"""joint: the video stage's model learns point and box prompts (pretrain/dvc.yaml).

Runs in pretrain/ after the `pretrain` stage: reads tiny_video.pt and the recipe in
params.yaml, writes the shipped base, src/sam2_video/model/weights/tiny_base.pt (float16,
tracked by git and recorded in pretrain/dvc.lock), and metrics.json (source-domain J&F per
prompt at each validation). A run that ends below `min_source_jf` with any prompt (mask,
points or box) writes nothing and fails.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

from sam2_video import pretrain
from sam2_video.errors import run_stage
from sam2_video.model import build
from sam2_video.params import load_pretrain_params

PARAMS, METRICS, START = Path("params.yaml"), Path("metrics.json"), Path("tiny_video.pt")
WEIGHTS = Path("../src/sam2_video/model/weights/tiny_base.pt")  # as pretrain/dvc.yaml lists it


def main() -> None:
    p = load_pretrain_params(PARAMS)
    torch.set_num_threads(p.threads)
    if not START.is_file():
        raise FileNotFoundError(f"{START}: not found; run the video stage first (make tiny-base)")
    model = build.build_model(build.load_model_config("tiny"))
    build.load_checkpoint(model, START)
    history = pretrain.joint(model, p, report=lambda r: print(json.dumps(r), flush=True))
    final = pretrain.finish(model, history, p, WEIGHTS, METRICS, PARAMS, pretrain.JOINT_GATE)
    print(f"joint: wrote {WEIGHTS} ({WEIGHTS.stat().st_size / 1e6:.1f} MB), {final}")


if __name__ == "__main__":
    run_stage("joint", main)
