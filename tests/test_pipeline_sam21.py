"""End to end with a SAM2.1 architecture: `dvc exp run -S model=sam2.1_hiera_tiny ...` on a
COCO-format video dataset and a checkpoint file this test writes (Hiera-T, random weights
from the sam2 package's config), small frames and 2 training steps, on CPU.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest
import torch
from dvc_project import REPO, copy_project, init_git, project_env, quick_train, run
from stored import write_coco
from test_readme import fenced_block_after

from sam2_video.evaluate.parity import vos_inference_predictor
from sam2_video.model import build

COMPARE = "<!-- compare command: tests/test_pipeline_sam21.py runs this line as written -->"
SIZE = 128  # train.image_size and shard.max_side: small, so that CPU runs it in a minute
SMALL = {
    # no train-time validation: on random weights the base (step 0) could tie the trained
    # model and be kept, and this test checks that training changed the weights
    "shard": {"workers": 1, "stride": 8, "tune_fraction": 0},
    "train": quick_train(steps=2, batch_size=1),
    "evaluate": {"max_clips": 1, "prompts": ["mask", "points"], "device": "cpu"},
    "render": {"num_clips": 1},
}


def sam21_tiny_checkpoint(path: Path) -> None:
    """A SAM2.1 Hiera-T checkpoint file: the sam2 package's config, random weights."""
    torch.manual_seed(0)
    build.save_checkpoint(build.build_model(build.load_model_config("sam2.1_hiera_tiny")), path)


@pytest.mark.slow
def test_exp_run_with_a_sam21_model_runs_every_stage(tmp_path):
    root = tmp_path / "project"
    root.mkdir()
    copy_project(root, SMALL)
    mine = root / "mine"  # the user's dataset: 3 videos of 8 frames, 3 tracked objects
    mine.mkdir()
    write_coco(mine, videos=3, frames=8, size=(96, SIZE)).rename(mine / "train.json")
    checkpoint = tmp_path / "sam2.1_hiera_tiny.pt"
    sam21_tiny_checkpoint(checkpoint)
    init_git(root, "SAM2.1 Pipeline Test")
    run(["git", "add", "-A"], root)
    run(["git", "commit", "-qm", "project under test"], root)

    switch = f"-S model=sam2.1_hiera_tiny -S fetch.source=coco_video -S fetch.local_dir=mine \
               -S train.image_size={SIZE} -S shard.max_side={SIZE}"
    cmd = [
        "dvc",
        "exp",
        "run",
        "-n",
        "sam21",
        *switch.split(),
        "-S",
        f"fetch.checkpoint={checkpoint}",
    ]
    out = run(cmd, root)
    ran = {line.split("'")[1] for line in out.stdout.splitlines() if "Running stage" in line}
    assert ran == {"fetch", "shard", "train", "evaluate", "render"}

    model_dir = root / "data" / "model"
    cfg = (model_dir / "sam2_model.yaml").read_text()
    assert "image_size: 128" in cfg and "embed_dim: 96" in cfg  # Hiera-T at the small size
    predictor = vos_inference_predictor(
        model_dir / "sam2_model.yaml", model_dir / "sam2_finetuned.pt"
    )
    assert type(predictor).__name__ == "SAM2VideoPredictor" and predictor.image_size == SIZE
    tuned = torch.load(model_dir / "sam2_finetuned.pt", weights_only=True)["model"]
    base = torch.load(checkpoint, weights_only=True)["model"]
    assert set(tuned) == set(base)
    assert not torch.equal(
        tuned["memory_encoder.out_proj.weight"], base["memory_encoder.out_proj.weight"]
    )  # trained
    assert torch.equal(
        tuned["image_encoder.neck.convs.0.conv.weight"],
        base["image_encoder.neck.convs.0.conv.weight"],
    )  # frozen

    metrics = json.loads((root / "metrics" / "eval.json").read_text())
    assert {"jf", "jf_base", "jf_gain", "jf_points"} <= set(metrics)
    assert list((root / "plots" / "gifs").glob("*.gif"))
    readme = (REPO / "README.md").read_text()
    compare = fenced_block_after(COMPARE, readme).strip()
    table = subprocess.run(
        ["bash", "-c", compare],
        cwd=root,
        capture_output=True,
        text=True,
        env=project_env(root) | {"COLUMNS": "120"},
    ).stdout
    header = next(line for line in table.splitlines() if "Experiment" in line)
    assert header.split() == [
        "Experiment",
        "jf",
        "jf_base",
        "jf_gain",
        "jf_gain_points",
        "jf_gain_box",
        "model",
        "seed",
        "lr",
    ]
    assert "…" not in table
    assert "sam21" in table and max(len(line) for line in table.splitlines()) <= 120
    shown = json.loads(run(["dvc", "exp", "show", "--json"], root).stdout)
    runs = [r for entry in shown for r in entry.get("experiments") or [] if r["name"] == "sam21"]
    assert len(runs) == 1
    exp_params = runs[0]["revs"][0]["data"]["params"]["params.yaml"]["data"]
    assert exp_params["model"] == "sam2.1_hiera_tiny"
    assert exp_params["fetch"]["checkpoint"] == str(checkpoint)
