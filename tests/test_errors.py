"""Errors a user can fix end a stage with one line (file, field, fix) and exit 1, no traceback.

The stage scripts run as DVC runs them: a subprocess in a project folder (here a temp one
holding only params.yaml and the data the case needs), with this checkout's src/ on PYTHONPATH.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from sam2_video import errors
from sam2_video.model import build

REPO = Path(__file__).resolve().parents[1]


def stage(name: str, cwd: Path, params: dict) -> subprocess.CompletedProcess:
    """Run stages/<name>.py in `cwd` with the repo's params.yaml updated by `params`."""
    merged = yaml.safe_load((REPO / "params.yaml").read_text())
    for key, value in params.items():
        section, _, leaf = key.rpartition(".")
        target = merged
        for part in filter(None, section.split(".")):
            target = target[part]
        target[leaf] = value
    (cwd / "params.yaml").write_text(yaml.safe_dump(merged))
    env = dict(os.environ, PYTHONPATH=str(REPO / "src"), OMP_NUM_THREADS="1")
    env.pop(errors.TRACEBACK_ENV, None)
    script = REPO / "stages" / f"{name}.py"
    return subprocess.run(
        [sys.executable, str(script)], cwd=cwd, env=env, capture_output=True, text=True
    )


def one_line_error(out: subprocess.CompletedProcess, name: str) -> str:
    """The stage failed with exactly one line on stderr, `<stage>: error: ...`; that line."""
    assert out.returncode == 1, out.stderr
    lines = [line for line in out.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "Traceback" not in out.stderr, out.stderr
    assert lines[0].startswith(f"{name}: error: ")
    return lines[0]


def test_inconsistent_model_keys_stop_fetch_before_any_work(tmp_path):
    out = stage("fetch", tmp_path, {"model": "sam2.1_hiera_tiny", "shard.max_side": 128})
    line = one_line_error(out, "fetch")
    assert "params.yaml: train.image_size 1024 is above shard.max_side 128" in line
    assert not (tmp_path / "data").exists()


def test_checkpoint_of_another_architecture_stops_fetch(tmp_path, tiny_model):
    ckpt = tmp_path / "mine.pt"
    build.save_checkpoint(tiny_model, ckpt)  # the tiny architecture's weights
    params = {
        "model": "sam2.1_hiera_tiny",
        "train.image_size": 128,
        "shard.max_side": 128,
        "fetch.checkpoint": str(ckpt),
    }
    line = one_line_error(stage("fetch", tmp_path, params), "fetch")
    assert f"{ckpt}: checkpoint of another architecture" in line
    assert "fetch.checkpoint" in line and "sam2.1_hiera_tiny" in line
    assert not (tmp_path / "data").exists()


def test_missing_checkpoint_file_and_dataset_are_named(tmp_path):
    line = one_line_error(stage("fetch", tmp_path, {"fetch.checkpoint": "nope.pt"}), "fetch")
    assert "fetch.checkpoint: 'nope.pt' is neither auto" in line
    params = {"fetch.source": "coco_video", "fetch.local_dir": "mine"}
    line = one_line_error(stage("fetch", tmp_path, params), "fetch")
    assert "fetch.local_dir: mine/train.json not found" in line
    assert not (tmp_path / "data" / "raw").exists()


def test_bad_data_stops_shard_naming_file_and_field(tmp_path):
    user = tmp_path / "mine"
    user.mkdir()
    images = [
        {
            "id": i + 1,
            "file_name": f"{i}.jpg",
            "video_id": 1,
            "order_in_video": i,
            "width": 8,
            "height": 8,
        }
        for i in range(3)
    ]
    del images[1]["order_in_video"]
    coco = {"images": images, "annotations": [], "categories": [{"id": 1, "name": "x"}]}
    (user / "train.json").write_text(json.dumps(coco))
    params = {"fetch.source": "coco_video", "fetch.local_dir": "mine"}
    assert stage("fetch", tmp_path, params).returncode == 0
    line = one_line_error(stage("shard", tmp_path, params), "shard")
    assert "mine/train.json:images[id=2].order_in_video" in line
    assert line.endswith("(`sam2-video check mine/train.json mine` lists every problem)")
    assert not (tmp_path / "data" / "shards").exists()


@pytest.mark.parametrize(
    "name,fragment",
    [
        ("train", "data/raw/base_checkpoint.pt: not found; run the fetch stage (dvc repro fetch)"),
        ("evaluate", "no shard manifest"),
        ("render", "no shard manifest"),
    ],
)
def test_a_stage_run_before_its_inputs_exist_says_which_stage_to_run(tmp_path, name, fragment):
    line = one_line_error(stage(name, tmp_path, {}), name)
    assert fragment in line and "dvc repro" in line


def test_run_stage_exits_1_with_one_line_and_keeps_tracebacks_for_bugs(capsys):
    def bad_input():
        raise ValueError("data/x.json: images[0].file_name:\n  missing; add it")

    with pytest.raises(SystemExit) as exit_:
        errors.run_stage("shard", bad_input)
    assert exit_.value.code == 1
    assert capsys.readouterr().err == (
        "shard: error: data/x.json: images[0].file_name: missing; add it\n"
    )

    def bug():
        raise KeyError("oops")

    with pytest.raises(KeyError):
        errors.run_stage("shard", bug)
