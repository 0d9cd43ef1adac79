"""End to end: the real pipeline, in a real temporary git repo, with real DVC.

A reduced params file keeps it to a minute or so on 2 cores: `dvc repro`, a second
`dvc repro` that does nothing, `dvc exp run -S lr=...` re-running only train/evaluate/render,
and `-S lrr=...` failing with the key named.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from dvc_project import copy_project, init_git, reduced_params, run

SMALL = reduced_params(train_steps=3)


@pytest.fixture(scope="module")
def project(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("project")
    copy_project(root, SMALL)
    init_git(root, "Pipeline Test")
    run(["git", "add", "-A"], root)
    run(["git", "commit", "-qm", "pipeline under test"], root)
    run(["dvc", "repro"], root)
    return root


@pytest.mark.slow
def test_repro_produces_every_declared_output(project):
    metrics = json.loads((project / "metrics" / "eval.json").read_text())
    for key in ("jf", "jf_base", "jf_gain", "j", "f", "dice", "jf_mask", "jf_base_box"):
        assert key in metrics and -1 <= metrics[key] <= 1
    assert (project / "data" / "model" / "sam2_finetuned.pt").is_file()
    assert (project / "data" / "model" / "sam2_model.yaml").is_file()
    assert list((project / "plots" / "gifs").glob("*.gif"))
    assert (project / "dvclive" / "train" / "metrics.json").is_file()


@pytest.mark.slow
def test_second_repro_does_nothing_and_dvc_yaml_is_untouched(project):
    before = (project / "dvc.yaml").read_text()
    out = run(["dvc", "repro"], project)
    assert "didn't change, skipping" in out.stdout and "Running stage" not in out.stdout
    assert (project / "dvc.yaml").read_text() == before
    status = run(["dvc", "status"], project)
    assert "up to date" in status.stdout


@pytest.mark.slow
def test_exp_run_with_lr_reruns_only_train_evaluate_render(project):
    run(["git", "add", "-A"], project)
    run(["git", "commit", "-qm", "baseline run"], project)
    out = run(["dvc", "exp", "run", "-S", "lr=1e-4"], project)
    ran = {line.split("'")[1] for line in out.stdout.splitlines() if "Running stage" in line}
    # render re-runs only when the predictions changed (DVC skips it on identical inputs; with
    # 3 training steps they may well be identical); fetch and shard must never re-run
    assert {"train", "evaluate"} <= ran <= {"train", "evaluate", "render"}
    show = run(["dvc", "exp", "show", "--csv"], project).stdout
    header = show.splitlines()[0].split(",")
    assert {"lr", "jf", "jf_base", "jf_gain"} <= set(header)


@pytest.mark.slow
def test_exp_run_with_unknown_param_fails_naming_it(project):
    out = run(["dvc", "exp", "run", "-S", "lrr=1e-4"], project, check=False)
    assert out.returncode != 0
    assert "lrr" in out.stdout + out.stderr


@pytest.mark.slow
def test_killed_training_resumes_to_the_uninterrupted_result(project):
    """kill -9 during train; `dvc repro` again resumes from the persisted checkpoint.

    Runs last in this module: it changes the project's params.
    """
    import signal
    import time

    def weights_digest() -> str:
        return hashlib.sha256((project / "data/model/sam2_finetuned.pt").read_bytes()).hexdigest()

    params = yaml.safe_load((project / "params.yaml").read_text())
    params["train"].update({"steps": 8, "checkpoint_every": 2, "val_every": 4})
    (project / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    checkpoints = project / "data" / "checkpoints"
    shutil.rmtree(checkpoints, ignore_errors=True)
    run(["dvc", "repro"], project)
    reference = (json.loads((project / "metrics" / "eval.json").read_text()), weights_digest())

    shutil.rmtree(checkpoints)
    env = dict(
        os.environ,
        PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
        PYTHONPATH=str(project / "src"),
    )
    proc = subprocess.Popen(
        ["dvc", "repro", "-f", "train"],
        cwd=project,
        env=env,
        start_new_session=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.time() + 240
    while not (checkpoints / "resume.pt").exists() and time.time() < deadline:
        time.sleep(0.2)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    assert (checkpoints / "resume.pt").exists(), "training never wrote a checkpoint"
    out = run(["dvc", "repro"], project)
    assert "resuming from step" in out.stdout + out.stderr
    assert (json.loads((project / "metrics" / "eval.json").read_text()), weights_digest()) == (
        reference
    )


def test_the_model_is_declared_as_a_dvc_artifact():
    """What `dvc artifacts get` and the model registry read: dvc's own loader of dvc.yaml."""
    from dvc.repo import Repo
    from dvc_project import REPO

    with Repo(str(REPO)) as repo:
        declared = repo.artifacts.read()["dvc.yaml"]
        train_outs = {str(out.def_path) for out in repo.stage.collect("train")[0].outs}
    model = declared["sam2-video-model"]
    assert model.type == "model" and model.path == "data/model" and model.desc
    assert model.path in train_outs
