"""Reproducibility as a feature, with real git and real DVC in a temporary copy of the repo.

The slow tests run the pipeline with reduced params (seconds per `dvc repro` on 2 cores):
two runs give byte-identical outputs; a queued sweep runs both learning rates on two workers
and `dvc exp show` compares them; data round-trips through a directory remote; a clean clone
passes `sam2-video repro-check` and a changed shard param fails it, naming stage and file.
The fast tests run `repro_check` on a committed run of three tiny stages (a clean clone
passes; each metric within its own tolerance, else the default; a changed data output and
a stale `dvc.lock` are reported).
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
from dvc_project import copy_project, init_git, project_env, reduced_params, run

from sam2_video import cli, repro_check

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
    assert "params.yaml:shard.max_side: 64 now, 'auto' at HEAD" in out.stdout.splitlines()
    assert "data/shards/train/shard-00000.tar" in shard_lines[0]
    assert not any(line.startswith("stage 'fetch'") for line in out.stdout.splitlines())


# ---- fast: repro-check on a pipeline of three tiny stages --------------------------------

MAKE = """import json, sys
from pathlib import Path

def write(path, text):
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    Path(path).write_text(text)

if sys.argv[1] == "fetch":
    write("data/raw/a.txt", sys.argv[2])
    write("data/raw/b.txt", "b")
elif sys.argv[1] == "shard":
    write("data/shards/train.txt", Path("data/raw/a.txt").read_text() * 2)
    write("data/shards/val.txt", "v")
else:  # train: jitter.json (untracked, no dep) plays another CPU's rounding
    metrics = {"val": {"jf": 0.5, "split": "val"}, "loss": 2.0, "nan": float("nan")}
    metrics["seconds"] = 3.0
    jitter = Path("jitter.json")
    metrics.update(json.loads(jitter.read_text()) if jitter.is_file() else {})
    write("m/train.json", json.dumps(metrics))
    write("curves/loss.tsv", f"step\\tloss\\n0\\t{metrics['loss']}\\n")
"""
MINI_STAGES = {
    "fetch": {"cmd": "python make.py fetch ${n}", "deps": ["make.py"], "params": ["n"]},
    "shard": {"cmd": "python make.py shard", "deps": ["make.py", "data/raw"]},
    "train": {"cmd": "python make.py train", "deps": ["make.py", "data/shards"]},
}
MINI_OUTS = {
    "fetch": {"outs": ["data/raw"]},
    "shard": {"outs": ["data/shards"]},
    "train": {"outs": ["curves"], "metrics": [{"m/train.json": {"cache": False}}]},
}


@pytest.fixture(scope="module")
def mini(tmp_path_factory) -> Path:
    """A git repo whose HEAD holds dvc.lock and metrics of a run of fetch -> shard -> train:
    data directories from params.yaml's n, metrics in git, curves in DVC's cache."""
    root = tmp_path_factory.mktemp("mini")
    (root / "make.py").write_text(MAKE)
    (root / "params.yaml").write_text("n: 3\n")
    stages = {name: {**spec, **MINI_OUTS[name]} for name, spec in MINI_STAGES.items()}
    (root / "dvc.yaml").write_text(yaml.safe_dump({"stages": stages}, sort_keys=False))
    git_repo(root)
    run(["dvc", "init", "-q"], root)
    run(["dvc", "repro"], root)
    run(["git", "add", "-A"], root)
    run(["git", "commit", "-qm", "the run"], root)
    return root


def copy_of(mini: Path, tmp_path: Path) -> Path:
    """The committed run with its workspace and cache, to change."""
    return Path(shutil.copytree(mini, tmp_path / "mini", symlinks=True))


def repro_check_lines(root: Path, *args: str, capsys) -> tuple[int, list[str]]:
    """`sam2-video repro-check` in this process: its exit status and output lines."""
    code = cli.main(["repro-check", str(root), *args])
    return code, capsys.readouterr().out.splitlines()


def test_a_clean_clone_reproduced_passes(mini, tmp_path, capsys):
    clone = tmp_path / "clone"
    run(["git", "clone", "-q", str(mini), str(clone)], mini)
    run(["dvc", "repro"], clone)  # no data, no cache: every stage runs
    assert repro_check.check_reproduction(clone, 0.0) == []
    code, lines = repro_check_lines(clone, "--tolerance", "0", capsys=capsys)
    assert (code, lines) == (0, ["repro-check against HEAD (metric tolerance 0.0): reproduces"])


def test_each_metric_within_its_own_tolerance_or_else_the_default(mini, tmp_path, capsys):
    """Another CPU's run: metrics and curves differ, dvc.lock is current, data exact."""
    root = copy_of(mini, tmp_path)
    jitter = {"val": {"jf": 0.52, "split": "val"}, "loss": 2.3, "seconds": 99.0, "new": 1}
    (root / "jitter.json").write_text(json.dumps(jitter))
    run(["dvc", "repro", "--force", "--single-item", "train"], root)
    tolerances = tmp_path / "tolerances.json"

    # val.jf moved 0.02: inside its own 0.021; loss moved 0.3: outside the default 0.29
    tolerances.write_text(json.dumps({"m/train.json:val.jf": 0.021}))
    code, lines = repro_check_lines(
        root, "--tolerance", "0.29", "--tolerances", str(tolerances), capsys=capsys
    )
    assert code == 1 and len(lines) == 3, lines
    assert lines[:2] == [
        "stage 'train': m/train.json: loss: 2.3 now, 2.0 at HEAD: |difference| 0.3 > tolerance "
        "0.29",
        "stage 'train': m/train.json: new: 1 now, None at HEAD (present on one side only)",
    ]

    # its own tolerance wins over a default that would allow it: 0.02 > 0.019
    own = {"m/train.json:val.jf": 0.019, "m/train.json:new": 0}
    problems = repro_check.check_reproduction(root, 0.31, per_metric=own)
    assert [p.message.split(":")[0] for p in problems] == ["new", "val.jf"]
    assert "> tolerance 0.019" in problems[1].message


def test_a_changed_data_output_is_reported_naming_stage_and_files(mini, tmp_path):
    root = copy_of(mini, tmp_path)
    (root / "params.yaml").write_text("n: 4\n")
    run(["dvc", "repro"], root)
    lines = [str(p) for p in repro_check.check_reproduction(root, 1.0)]
    assert len(lines) == 3, lines
    assert lines[0].startswith("stage 'fetch': data/raw: md5 ")
    assert lines[0].endswith(".dir in dvc.lock at HEAD; files that differ: data/raw/a.txt")
    assert lines[1].startswith("stage 'shard': data/shards: md5 ")
    assert lines[1].endswith("; files that differ: data/shards/train.txt")
    assert lines[2] == "params.yaml:n: 4 now, 3 at HEAD"

    (root / "data/shards/val.txt").write_text("changed after `dvc repro`")
    lines = [str(p) for p in repro_check.check_reproduction(root, 1.0)]
    assert lines[0] == (
        "stage 'shard': dvc.lock: changed per `dvc status`: "
        '{"changed outs": {"data/shards": "modified"}}'
    )
    assert lines[1].startswith("stage 'train': dvc.lock: changed per `dvc status`: ")
    assert "data/shards/train.txt, data/shards/val.txt" in lines[3]


def test_an_unknown_ref_is_an_error_naming_it(mini):
    with pytest.raises(ValueError, match="no-such-ref"):
        repro_check.check_reproduction(mini, 0.0, ref="no-such-ref")
