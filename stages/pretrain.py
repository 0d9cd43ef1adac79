"""pretrain: train the shipped tiny base from scratch (the pretrain pipeline).

Runs in pretrain/ (`dvc repro pretrain/dvc.yaml`, or `make tiny-base`): reads the recipe
from params.yaml there, writes src/sam2_video/model/weights/tiny_base.pt (float16, tracked
by git and recorded in pretrain/dvc.lock) and metrics.json (source-domain J&F per prompt
at each validation). A run that ends below `min_source_jf` writes nothing and fails.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

from sam2_video.errors import run_stage
from sam2_video.files import write_json_atomic
from sam2_video.model import pretrain_tiny
from sam2_video.params import load_pretrain_params

PARAMS, METRICS = Path("params.yaml"), Path("metrics.json")
WEIGHTS = Path("../src/sam2_video/model/weights/tiny_base.pt")  # as pretrain/dvc.yaml lists it


def main() -> None:
    p = load_pretrain_params(PARAMS)
    torch.set_num_threads(p.threads)
    model, history = pretrain_tiny.pretrain(p, report=lambda r: print(json.dumps(r), flush=True))
    final = history[-1]
    if final["source_jf_mask"] < p.min_source_jf:
        raise ValueError(
            f"{PARAMS}: source-domain J&F {final['source_jf_mask']:.3f} (mask prompt) at step "
            f"{final['step']} is below min_source_jf {p.min_source_jf}; no weights written: "
            "try another seed or a later stop_at"
        )
    pretrain_tiny.save_half(model, WEIGHTS)
    write_json_atomic(METRICS, {"final": final, "history": history})
    print(f"pretrain: wrote {WEIGHTS} ({WEIGHTS.stat().st_size / 1e6:.1f} MB), {final}")


if __name__ == "__main__":
    run_stage("pretrain", main)
