"""The README's commands work as written: its own-data block, copied literally, runs in a fresh
copy of the repo on a COCO-format video dataset this test writes into data/user."""

from __future__ import annotations

import json
import re
import subprocess

import pytest
from dvc_project import REPO, copy_project, init_git, project_env, reduced_params, run
from stored import write_coco

OWN_DATA = "<!-- own-data commands: tests/test_readme.py runs this block as written -->"


def fenced_block_after(marker: str, text: str) -> str:
    """The first ```bash block after `marker` in `text`."""
    found = re.search(re.escape(marker) + r"\s*```bash\n(.*?)```", text, re.S)
    assert found, f"README.md: no ```bash block after {marker!r}"
    return found.group(1)


def test_fenced_block_after_finds_the_block_under_its_marker():
    text = "```bash\nno\n```\n<!-- m -->\n```bash\nyes 1\nyes 2\n```\n```bash\nno\n```"
    assert fenced_block_after("<!-- m -->", text) == "yes 1\nyes 2\n"


@pytest.mark.slow
def test_own_data_commands_run_as_written(tmp_path):
    commands = fenced_block_after(OWN_DATA, (REPO / "README.md").read_text())
    assert "sam2-video check" in commands and "dvc exp run" in commands
    root = tmp_path / "clone"
    root.mkdir()
    copy_project(root, reduced_params(train_steps=2))  # seconds, not minutes, on 2 cores
    user = root / "data" / "user"
    write_coco(user, videos=4, frames=6, size=(96, 128)).rename(user / "train.json")
    init_git(root, "README Test")
    run(["git", "add", "-A"], root)
    run(["git", "commit", "-qm", "a user's project"], root)

    out = subprocess.run(
        ["bash", "-euo", "pipefail", "-c", commands],
        cwd=root,
        env=project_env(root, threads=1),
        capture_output=True,
        text=True,
    )
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    assert "data/user/train.json: " in out.stdout  # check's summary line
    source = json.loads((root / "data" / "raw" / "source.json").read_text())
    assert source["kind"] == "coco_video" and source["splits"]["train"]["images"] == "data/user"
    metrics = json.loads((root / "metrics" / "eval.json").read_text())
    assert {"jf", "jf_base", "jf_gain"} <= set(metrics)
    table = out.stdout.splitlines()
    header = next(line for line in table if "Experiment" in line and "jf_gain" in line)
    assert header.split()[:4] == ["Experiment", "jf", "jf_base", "jf_gain"]
    assert "coco_video" in out.stdout
