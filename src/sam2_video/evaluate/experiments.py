"""Compare DVC experiments by their per-object results (`metrics/per_object.json`).

An experiment is named as `dvc exp show` names it (`dvc exp run` gives each a name), or by
any git revision (a branch, a commit), or `workspace` for the files as they are. Each is
read from git (`git show <rev>:metrics/per_object.json`: the evaluate stage writes that
file uncached, so every experiment commit holds its own copy).
"""

from __future__ import annotations

import json
import subprocess
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from sam2_video.evaluate import uncertainty

PER_OBJECT = "metrics/per_object.json"
WORKSPACE = "workspace"


def _git(repo: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(["git", *args], cwd=repo, capture_output=True, text=True)


def resolve(repo: Path, name: str) -> str | None:
    """The git revision of an experiment name or revision; None for the workspace."""
    if name == WORKSPACE:
        return None
    refs = _git(repo, "for-each-ref", "--format=%(refname)", "refs/exps").stdout.split()
    matches = [ref for ref in refs if ref.rsplit("/", 1)[-1] == name]
    if len(matches) == 1:
        return matches[0]
    if len(matches) > 1:
        raise ValueError(f"experiment name {name!r} is ambiguous: {', '.join(matches)}")
    if _git(repo, "rev-parse", "--verify", "--quiet", f"{name}^{{commit}}").returncode == 0:
        return name
    raise ValueError(
        f"{name!r}: neither an experiment (`dvc exp show` lists them) nor a git revision"
    )


def read_rows(repo: Path, name: str) -> list[dict]:
    """An experiment's per-object rows (evaluate's metrics/per_object.json)."""
    rev = resolve(repo, name)
    if rev is None:
        path = repo / PER_OBJECT
        if not path.is_file():
            raise FileNotFoundError(f"{path}: not found; run the evaluate stage (dvc repro)")
        return json.loads(path.read_text())
    shown = _git(repo, "show", f"{rev}:{PER_OBJECT}")
    if shown.returncode != 0:
        raise FileNotFoundError(
            f"{name}: has no {PER_OBJECT} (an experiment from before per-object results? "
            "re-run it with `dvc exp run`)"
        )
    return json.loads(shown.stdout)


def per_video_scores(rows: list[dict], prompt: str, key: str) -> dict[str, np.ndarray]:
    """{clip: (O,) scores} of one prompt type, objects in index order."""
    videos: dict[str, dict[int, float]] = {}
    for row in rows:
        if row["prompt"] == prompt:
            videos.setdefault(row["clip"], {})[int(row["object"])] = float(row[key])
    if not videos:
        raise ValueError(f"no per-object result for prompt {prompt!r}")
    return {clip: np.array([objs[o] for o in sorted(objs)]) for clip, objs in videos.items()}


def compare(
    repo: Path, a: Sequence[str], b: Sequence[str], prompt: str = "mask", key: str = "jf"
) -> uncertainty.Interval:
    """Group a's mean `key` (fine-tuned J&F by default) minus group b's, paired by object,
    with its 95 % interval. Every experiment must have scored the same videos and objects."""
    runs = {name: per_video_scores(read_rows(repo, name), prompt, key) for name in [*a, *b]}
    clips = sorted(runs[a[0]])
    for name, videos in runs.items():
        if sorted(videos) != clips:
            raise ValueError(
                f"{name} scored other validation videos than {a[0]}: compare experiments "
                "that share the fetch and shard params"
            )
    ordered = {name: [videos[c] for c in clips] for name, videos in runs.items()}
    return uncertainty.paired_difference([ordered[n] for n in a], [ordered[n] for n in b])
