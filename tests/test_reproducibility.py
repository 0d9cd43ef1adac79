"""Reproducibility as a feature, with real git and real DVC in a temporary copy of the repo.

The slow tests run the pipeline with reduced params (seconds per `dvc repro` on 2 cores):
two runs give byte-identical outputs; a queued sweep runs both learning rates on two workers
and `dvc exp show` compares them; data round-trips through a directory remote; a clean clone
passes `sam2-video repro-check` and a changed shard param fails it, naming stage and file.
The fast tests pin the metric comparison of `repro_check` on small committed files.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from dvc_project import REPO, copy_project, init_git, project_env, reduced_params, run

from sam2_video import repro_check

REDUCED = reduced_params(train_steps=4)
OUTPUTS = (
    "data/raw",
    "data/shards",
    "data/model",
    "data/eval/predictions",
    "metrics",
    "plots/gifs",
)


def git_repo(root: Path) -> None:
    init_git(root, "Reproducibility Test")


def commit_all(root: Path, message: str) -> None:
    run(["git", "add", "-A"], root)
    # the metrics of the run are part of the record even where .gitignore skips dvclive/
    run(["git", "add", "-f", "dvclive/train/metrics.json"], root, check=False)
    run(["git", "commit", "-qm", message], root)


@pytest.fixture(scope="module")
def committed(tmp_path_factory) -> Path:
    """A git repo whose HEAD holds the code, dvc.lock and metrics of one reduced run."""
    root = tmp_path_factory.mktemp("committed")
    copy_project(root, REDUCED)
    git_repo(root)
    commit_all(root, "code")
    run(["dvc", "repro"], root)
    commit_all(root, "the default run: dvc.lock and metrics")
    return root


def output_digests(root: Path) -> dict[str, str]:
    """sha256 of every file the pipeline wrote, except those that record wall-clock time."""
    digests = {}
    for top in OUTPUTS:
        for path in sorted((root / top).rglob("*")):
            rel = path.relative_to(root).as_posix()
            if path.is_file():
                digests[rel] = hashlib.sha256(path.read_bytes()).hexdigest()
    return digests


def run_metrics(root: Path) -> dict:
    train = json.loads((root / "dvclive/train/metrics.json").read_text())
    assert "seconds" not in train and "feature_cache" not in train  # logs/train.json's
    return {"eval": json.loads((root / "metrics/eval.json").read_text()), "train": train}


@pytest.mark.slow
def test_two_runs_give_byte_identical_weights_and_identical_metrics(committed):
    first, first_metrics = output_digests(committed), run_metrics(committed)
    shutil.rmtree(committed / "data" / "checkpoints")  # else train resumes from its end state
    out = run(["dvc", "repro", "--force"], committed)  # --force: no restore from the run cache
    assert out.stdout.count("Running stage") == 5
    second = output_digests(committed)
    assert "data/model/sam2_finetuned.pt" in second and len(second) > 20
    assert second == first
    assert run_metrics(committed) == first_metrics


@pytest.mark.slow
def test_data_round_trips_through_a_directory_remote(committed, tmp_path):
    before = output_digests(committed)
    run(["dvc", "remote", "add", "-d", "-f", "storage", str(tmp_path / "remote")], committed)
    run(["dvc", "push"], committed)
    for cached in (".dvc/cache", "data/raw", "data/shards", "data/model", "data/eval"):
        shutil.rmtree(committed / cached)
    assert "not in cache" in run(["dvc", "status"], committed).stdout
    run(["dvc", "pull"], committed)
    assert "up to date" in run(["dvc", "status"], committed).stdout
    out = run(["dvc", "repro"], committed)
    assert "Running stage" not in out.stdout and "up to date" in out.stdout
    assert output_digests(committed) == before


def start_queue(root: Path, workers: int, log: Path) -> None:
    """`dvc queue start`, its output in a file: the detached workers inherit its output
    handles, so with pipes the call returned only when the last worker exited (a CI run hung
    there past 300 s). One OpenMP thread per worker: two workers on two cores."""
    cmd = ["dvc", "queue", "start", "-j", str(workers)]
    with log.open("w") as out:
        code = subprocess.run(
            cmd, cwd=root, env=project_env(root, threads=1), stdout=out, stderr=subprocess.STDOUT
        ).returncode
    assert code == 0, log.read_text()


def running_task_logs(root: Path, status: str) -> str:
    """`dvc queue logs` of every task still running: what a hung sweep was doing."""
    names = [line.split()[0] for line in status.splitlines() if "Running" in line]
    logs = [run(["dvc", "queue", "logs", name], root, check=False).stdout for name in names]
    return "\n".join(logs)


def wait_for_queue(root: Path, timeout_s: float) -> str:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        status = run(["dvc", "queue", "status"], root).stdout
        if "Queued" not in status and "Running" not in status:
            return status
        time.sleep(2)
    raise AssertionError(
        f"queue not done after {timeout_s} s:\n{status}\n{running_task_logs(root, status)}"
    )


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_queued_sweep_runs_on_two_workers_and_exp_show_compares(committed, tmp_path):
    """Runs last of the tests on `committed`: `dvc exp apply` changes its workspace."""
    run(["dvc", "exp", "run", "--queue", "-S", "lr=1e-4,3e-4"], committed)
    try:
        start_queue(committed, workers=2, log=tmp_path / "queue-start.log")
        status = wait_for_queue(committed, timeout_s=480)
    finally:
        run(["dvc", "queue", "stop", "--kill"], committed, check=False)
    assert status.count("Success") == 2, status
    table = csv.DictReader(io.StringIO(run(["dvc", "exp", "show", "--csv"], committed).stdout))
    experiments = {row["Experiment"]: row for row in table if row["Experiment"]}
    assert sorted(float(row["lr"]) for row in experiments.values()) == [1e-4, 3e-4]
    assert all(row["jf"] not in ("", "!") for row in experiments.values())
    markdown = run(["dvc", "exp", "show", "--md"], committed).stdout
    assert all(name in markdown for name in experiments) and "| lr " in markdown

    low_lr = next(name for name, row in experiments.items() if float(row["lr"]) == 1e-4)
    run(["dvc", "exp", "apply", low_lr], committed)
    assert yaml.safe_load((committed / "params.yaml").read_text())["lr"] == 1e-4
    applied = json.loads((committed / "metrics/eval.json").read_text())
    assert applied["jf"] == pytest.approx(float(experiments[low_lr]["jf"]))


@pytest.fixture(scope="module")
def clone(committed, tmp_path_factory) -> Path:
    """A clean clone of the committed run (no data, no cache), reproduced with `dvc repro`."""
    root = tmp_path_factory.mktemp("clone") / "project"
    run(["git", "clone", "-q", str(committed), str(root)], committed)
    run(["dvc", "repro"], root)
    return root


def run_repro_check(root: Path, tolerance: float) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "sam2_video.cli", "repro-check", "--tolerance", str(tolerance)]
    return run(cmd, root, check=False)


@pytest.mark.slow
def test_clean_clone_reproduces_the_committed_run(clone):
    out = run_repro_check(clone, tolerance=0.0)  # same machine: exact
    assert out.returncode == 0, out.stdout + out.stderr
    assert "reproduces" in out.stdout
    second = run(["dvc", "repro"], clone)
    assert "Running stage" not in second.stdout and "up to date" in second.stdout
    assert "up to date" in run(["dvc", "status"], clone).stdout


@pytest.mark.slow
def test_changed_shard_param_fails_the_check_naming_stage_and_file(clone):
    """Runs after the clean-clone test: it changes the clone's params."""
    params = yaml.safe_load((clone / "params.yaml").read_text())
    params["shard"]["max_side"] = 64  # frames re-encoded at 64 px: other shard bytes
    params["train"]["image_size"] = 64  # (training above the stored size is refused)
    (clone / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    run(["dvc", "repro"], clone)
    out = run_repro_check(clone, tolerance=1.0)  # metrics aside: the data must differ by hash
    assert out.returncode == 1
    shard_lines = [line for line in out.stdout.splitlines() if line.startswith("stage 'shard'")]
    assert len(shard_lines) == 1, out.stdout
    assert shard_lines[0].startswith("stage 'shard': data/shards: md5 ")
    assert "param params.yaml:shard.max_side 'auto' -> 64" in shard_lines[0]
    assert "data/shards/train/shard-00000.tar" in shard_lines[0]
    assert not any(line.startswith("stage 'fetch'") for line in out.stdout.splitlines())


# ---- fast: the metric comparison on small committed files ---------------------------------


@pytest.fixture
def metrics_repo(tmp_path) -> Path:
    (tmp_path / "dvc.yaml").write_text(
        yaml.safe_dump(
            {
                "stages": {
                    "evaluate": {"cmd": "true", "metrics": [{"m/eval.json": {"cache": False}}]}
                }
            }
        )
    )
    (tmp_path / "m").mkdir()
    committed = {"jf": 0.5, "steps": 10, "seconds": 3.0, "split": "val", "nan": float("nan")}
    (tmp_path / "m" / "eval.json").write_text(json.dumps({"val": committed}))
    git_repo(tmp_path)
    run(["git", "add", "-A"], tmp_path)
    run(["git", "commit", "-qm", "metrics"], tmp_path)
    return tmp_path


def write_metrics(repo: Path, **values) -> None:
    base = {"jf": 0.5, "steps": 10, "seconds": 3.0, "split": "val", "nan": float("nan")}
    (repo / "m" / "eval.json").write_text(json.dumps({"val": {**base, **values}}))


def test_declared_metrics_of_the_project_name_their_stages():
    assert repro_check.declared_metrics(REPO / "dvc.yaml") == [
        ("train", "dvclive/train/metrics.json"),
        ("evaluate", "metrics/eval.json"),
    ]


def test_metrics_within_tolerance_pass_and_wall_clock_is_ignored(metrics_repo):
    write_metrics(metrics_repo, jf=0.509, seconds=99.0)
    assert repro_check.metrics_problems(metrics_repo, "evaluate", "m/eval.json", "HEAD", 0.01) == []


def test_metrics_beyond_tolerance_fail_naming_stage_file_and_key(metrics_repo):
    write_metrics(metrics_repo, jf=0.52, steps=11, split="train")
    problems = repro_check.metrics_problems(metrics_repo, "evaluate", "m/eval.json", "HEAD", 0.01)
    assert [str(p).split(":")[:3] for p in problems] == [
        ["stage 'evaluate'", " m/eval.json", " val.jf"],
        ["stage 'evaluate'", " m/eval.json", " val.split"],
        ["stage 'evaluate'", " m/eval.json", " val.steps"],
    ]
    assert "> tolerance 0.01" in problems[0].message


def test_missing_key_and_uncommitted_file_are_problems(metrics_repo):
    (metrics_repo / "m" / "eval.json").write_text(json.dumps({"val": {"jf": 0.5}}))
    problems = repro_check.metrics_problems(metrics_repo, "evaluate", "m/eval.json", "HEAD", 1.0)
    missing = sorted(p.message.split(":")[0] for p in problems)
    assert missing == ["val.nan", "val.split", "val.steps"]
    absent = repro_check.metrics_problems(metrics_repo, "train", "m/train.json", "HEAD", 1.0)
    assert len(absent) == 1 and "not committed at HEAD" in absent[0].message


def test_unknown_ref_is_an_error_naming_it(metrics_repo):
    with pytest.raises(ValueError, match="no-such-ref"):
        repro_check.metrics_problems(metrics_repo, "evaluate", "m/eval.json", "no-such-ref", 1.0)
