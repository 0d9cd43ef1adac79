"""The README's commands work as written. Every ```bash block of README.md is listed in
BLOCKS by its first command line, either as run here (in a fresh copy of the repo with a
reduced pipeline), run by another test, or not run, with the reason; a block that is not
listed (a README command changed) fails `test_every_readme_block_is_run_or_says_why_not`."""

from __future__ import annotations

import csv
import io
import json
import re
import subprocess

import pytest
from dvc_project import REPO, copy_project, init_git, project_env, reduced_params, run
from stored import write_video_coco

DEFAULT_RUN = "<!-- default-run numbers: filled from metrics/eval.json -->"
OWN_DATA = "<!-- own-data commands: tests/test_readme.py runs this block as written -->"
EXPERIMENTS = "<!-- experiments commands: tests/test_readme.py runs this block as written -->"

RUN_HERE = "run here"
# each README ```bash block, by its first command line: what runs it, or why nothing does
BLOCKS = {
    "make repro": "not run: set-up plus the full default pipeline take minutes; CI runs "
    "`make test` and `make repro-check` (the same pipeline) on every submission",
    "dvc exp run -S lr=1e-4": RUN_HERE + ": test_experiments_commands_run_as_written",
    "dvc exp show --drop": "run by tests/test_pipeline_sam21.py (the compare command)",
    "sam2-video check data/user/train.json data/user": RUN_HERE
    + ": test_own_data_commands_run_as_written",
    "dvc exp run -S model=sam2.1_hiera_small": "not run: needs GPUs and a SAM2.1 checkpoint "
    "download; its CPU twin (SAM2.1 architecture, random weights) is tests/test_pipeline_sam21.py",
    "python -m bench.base_study": "not run: builds three tiny bases (~20-27 min each) and "
    "runs the default pipeline 12 times; its table is in README and docs/base_study.md",
    "dvc exp run --queue -S seed=0,1,2": "not run: a 6-run sweep takes minutes and `compare` "
    "takes experiment names (placeholders); the queued sweep is covered by "
    "tests/test_reproducibility.py's queue test, compare's statistics by tests/test_uncertainty.py",
}


def bash_blocks(text: str) -> list[str]:
    return re.findall(r"```bash\n(.*?)```", text, re.S)


def first_command(block: str) -> str:
    return next(line for line in block.splitlines() if line.strip() and not line.startswith("#"))


def test_every_readme_block_is_run_or_says_why_not():
    firsts = [first_command(b) for b in bash_blocks((REPO / "README.md").read_text())]
    listed = {first: next((k for k in BLOCKS if first.startswith(k)), None) for first in firsts}
    unlisted = [first for first, key in listed.items() if key is None]
    assert not unlisted, f"README blocks this test does not know (add them to BLOCKS): {unlisted}"
    stale = set(BLOCKS) - set(listed.values())
    assert not stale, f"BLOCKS lists blocks README.md no longer has: {stale}"
    print("\n".join(f"{key}: {BLOCKS[key]}" for key in listed.values()))


def fenced_block_after(marker: str, text: str) -> str:
    """The first ```bash block after `marker` in `text`."""
    found = re.search(re.escape(marker) + r"\s*```bash\n(.*?)```", text, re.S)
    assert found, f"README.md: no ```bash block after {marker!r}"
    return found.group(1)


def test_default_run_table_shows_the_committed_metrics():
    # the README's headline is the committed run's metrics/eval.json, not a number typed once
    readme = (REPO / "README.md").read_text()
    row = readme.split(DEFAULT_RUN, 1)[1].strip().splitlines()[2]
    m = json.loads((REPO / "metrics" / "eval.json").read_text())
    expected = (
        f"| {m['jf_base']:.3f} | {m['jf']:.3f} | {m['jf_gain']:+.3f} "
        f"[{m['jf_gain_mask_lo']:+.3f}, {m['jf_gain_mask_hi']:+.3f}] "
        f"| {m['jf_gain_points']:+.3f} / {m['jf_gain_box']:+.3f} |"
    )
    assert row.endswith(expected), (row, expected)


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
    # a user's export, not the test data: 12-frame videos (longer than a training window,
    # shorter than shard.clip_length's 16), a 3-frame one, a box-only annotation, no track
    # ids, and the held-out video's second object entering on frame 3
    videos = {"a": (12, 0), "box": (12, 0), "c": (3, 0), "d": (12, 0), "late": (12, 3)}
    write_video_coco(user, "train.json", videos, tracks=False)
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
    assert "video_shorter_than_clip" in out.stdout  # the 3-frame video, counted
    assert "without a mask" in out.stdout or "box-only" in out.stdout  # skipped, with a warning
    per_object = json.loads((root / "metrics" / "per_object.json").read_text())
    late = {(r["object"], r["prompt"]) for r in per_object if r["clip"] == "late"}
    assert (1, "mask") in late  # the object that enters on frame 3 is scored


@pytest.mark.slow
def test_experiments_commands_run_as_written(tmp_path):
    """The Experiments block after a `dvc repro`: another lr, the zero-shot baseline
    (`train.steps=0`: the base is the written model, jf_gain 0), `dvc plots show`."""
    commands = fenced_block_after(EXPERIMENTS, (REPO / "README.md").read_text())
    assert "train.steps=0" in commands and "dvc plots show" in commands
    root = tmp_path / "clone"
    root.mkdir()
    copy_project(root, reduced_params(train_steps=2))
    init_git(root, "README Test")
    run(["git", "add", "-A"], root)
    run(["git", "commit", "-qm", "a fresh clone"], root)
    env = project_env(root, threads=1)
    subprocess.run(["dvc", "repro"], cwd=root, env=env, check=True, capture_output=True)

    out = subprocess.run(
        ["bash", "-euo", "pipefail", "-c", commands],
        cwd=root,
        env=env,
        capture_output=True,
        text=True,
    )
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    # the last experiment (train.steps=0) is the workspace now: the base scored alone
    metrics = json.loads((root / "metrics" / "eval.json").read_text())
    assert metrics["jf_gain"] == 0 and metrics["jf"] == metrics["jf_base"]
    summary = json.loads((root / "dvclive" / "train" / "metrics.json").read_text())
    assert summary["steps"] == 0 and summary["best_step"] == 0
    assert (root / "dvc_plots" / "index.html").is_file()
    keep = "^(Experiment|train.steps|jf|jf_base|jf_gain)$"
    table = run(["dvc", "exp", "show", "--csv", "--drop", ".*", "--keep", keep], root).stdout
    print(table)
    rows = list(csv.DictReader(io.StringIO(table)))
    zero_shot = [r for r in rows if r["train.steps"] == "0"]
    assert zero_shot and all(float(r["jf_gain"]) == 0 for r in zero_shot)
