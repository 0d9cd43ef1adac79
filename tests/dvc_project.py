"""A copy of this repo in a temporary git repo, for tests that run real DVC end to end."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]


def reduced_params(train_steps: int) -> dict:
    """params.yaml overrides that make the whole pipeline run in seconds, on the CPU on any
    machine (on a GPU `auto` would train in bf16: the byte-identity checks need the CPU)."""
    return {
        "fetch": {"synthetic": {"train_videos": 3, "val_videos": 2, "num_frames": 6}},
        "shard": {"clip_length": 4, "stride": 2, "workers": 1},
        "train": quick_train(train_steps, batch_size=2),
        "evaluate": {"max_clips": 2, "prompts": ["mask", "box"], "device": "cpu"},
        "render": {"num_clips": 1},
    }


def quick_train(steps: int, batch_size: int) -> dict:
    """The train section of a seconds-long CPU run: validation and checkpoints every 2 steps."""
    return {
        "steps": steps,
        "batch_size": batch_size,
        "val_every": 2,
        "val_clips": 1,
        "checkpoint_every": 2,
        "warmup_steps": 1,
        "device": "cpu",
    }


def merge(base: dict, extra: dict) -> dict:
    """`extra`'s values written into `base`, section by section."""
    for key, value in extra.items():
        base[key] = merge(base[key], value) if isinstance(value, dict) else value
    return base


def project_env(cwd: Path, threads: int | None = None) -> dict[str, str]:
    """This interpreter's environment first on PATH and the copy's own src/ on PYTHONPATH."""
    env = dict(os.environ)
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env['PATH']}"
    env["PYTHONPATH"] = str(cwd / "src")  # the copy's code, not the checkout's
    if threads is not None:  # processes sharing the cores: OpenMP spin-waits when oversubscribed
        env["OMP_NUM_THREADS"] = env["MKL_NUM_THREADS"] = str(threads)
    return env


def run(cmd: list[str], cwd: Path, check: bool = True) -> subprocess.CompletedProcess:
    """Run in the copy's environment (`project_env`), output captured."""
    out = subprocess.run(cmd, cwd=cwd, env=project_env(cwd), capture_output=True, text=True)
    if check and out.returncode != 0:
        raise AssertionError(f"{' '.join(cmd)} failed:\n{out.stdout}\n{out.stderr}")
    return out


def init_git(root: Path, user: str) -> None:
    """git init with a local identity (CI may have no global one)."""
    run(["git", "init", "-q", "-b", "main"], root)
    run(["git", "config", "user.email", "test@example.invalid"], root)
    run(["git", "config", "user.name", user], root)


def copy_project(root: Path, params: dict) -> None:
    """Tracked and untracked-but-not-ignored files of this checkout, with `params` merged in."""
    listed = subprocess.run(
        ["git", "ls-files", "-co", "--exclude-standard"],
        cwd=REPO,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    for rel in listed:
        if (REPO / rel).is_file():
            (root / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(REPO / rel, root / rel)
    merged = merge(yaml.safe_load((root / "params.yaml").read_text()), params)
    (root / "params.yaml").write_text(yaml.safe_dump(merged, sort_keys=False))


def load_stage(name: str):
    """The stage script stages/<name>.py as a module (its main() is not run)."""
    import importlib.util

    spec = importlib.util.spec_from_file_location(f"{name}_stage", REPO / "stages" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module
