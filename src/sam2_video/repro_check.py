"""Is the workspace a reproduction of the committed run? Problems, one line each.

The committed `dvc.lock`, params and metrics (at a git ref, HEAD by default) are the record
of the default run. After `dvc repro` in a clean clone, DVC's own commands (its Python API,
`dvc.repo.Repo`) answer every question but one:

- `dvc status`: the workspace agrees with the workspace `dvc.lock`, so a second `dvc repro`
  would run nothing;
- `dvc diff REF`: the outputs of the data stages (fetch, shard) have exactly the hashes of
  the committed `dvc.lock` (DVC names the files that differ inside a directory where both
  listings are in the cache). The other outputs (weights, predictions, the training curves
  and GIFs in DVC's cache) are not compared: on another CPU they differ in the last digits;
- `dvc params diff REF`: the params are the committed ones;
- `dvc metrics diff REF --all`: every metric the `dvc.yaml` files declare, committed and now.

The one rule kept here: each metric within its tolerance. Training on CPU is bit-exact on
one machine, but other processors run other SIMD kernels (AVX2 vs AVX-512, MKL's Intel vs
AMD paths, ARM) whose float sums round differently, and hundreds of optimizer steps amplify
that last-bit noise.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

DATA_STAGES = ("fetch", "shard")
# Metric keys (at any depth) that describe how a run went, not what it produced: wall-clock
# time, and the encoder feature cache's use (a resumed run starts with an empty cache;
# "clips" is the name older runs gave "cached_clips").
VOLATILE_METRICS = frozenset({"seconds", "hit_rate", "clips", "cached_clips", "megabytes"})


@dataclass(frozen=True)
class Problem:
    stage: str | None  # None: not one stage's (a param)
    path: str
    message: str

    def __str__(self) -> str:
        where = f"stage '{self.stage}': " if self.stage else ""
        return f"{where}{self.path}: {self.message}"


def check_reproduction(
    repo_dir: Path | str,
    tolerance: float,
    ref: str = "HEAD",
    data_stages: tuple[str, ...] = DATA_STAGES,
    per_metric: dict[str, float] | None = None,
) -> list[Problem]:
    """Every way the workspace of `repo_dir` fails to reproduce the run committed at `ref`.

    `per_metric`: {"<metrics file>:<dotted key>": tolerance} for the keys it names (the
    spread measured by `python -m bench.numerics`); `tolerance` for every other key."""
    if tolerance < 0 or any(t < 0 for t in (per_metric or {}).values()):
        raise ValueError(f"tolerances must be >= 0, got {tolerance} and {per_metric}")
    root = Path(repo_dir)
    if not (root / "dvc.yaml").is_file():
        raise FileNotFoundError(f"{root / 'dvc.yaml'}: not found; pass the project's root")
    from dvc.exceptions import DvcException
    from dvc.repo import Repo

    try:
        with Repo(os.fspath(root)) as repo:
            root_dir, stages = repo.root_dir, repo.index.stages
            status = repo.status()
            data = repo.diff(ref)
            params = repo.params.diff(a_rev=ref)
            metrics = repo.metrics.diff(a_rev=ref, all=True)
    except DvcException as err:  # not a DVC repo, an unknown ref, a broken dvc.yaml
        raise ValueError(f"DVC in {root}: {err}") from None
    stage_of = {
        _relpath(out.fs_path, root_dir): _label(stage) for stage in stages for out in stage.outs
    }
    labels = {stage.addressing: _label(stage) for stage in stages}  # how `status` names them
    problems = [
        Problem(labels.get(key, key), "dvc.lock", f"changed per `dvc status`: {_changes(entries)}")
        for key, entries in status.items()
    ]
    problems += [
        Problem(stage, "dvc.yaml", "no such stage: its outputs cannot be compared")
        for stage in data_stages
        if stage not in stage_of.values()
    ]
    data_outs = {out: stage for out, stage in stage_of.items() if stage in data_stages}
    problems += data_problems(data, data_outs, ref)
    problems += [
        Problem(None, f"{path}:{key}", f"{change['new']!r} now, {change['old']!r} at {ref}")
        for path, keys in sorted(params.get("diff", {}).items())
        for key, change in sorted(keys.items())
    ]
    problems += unreadable(params, stage_of, ref) + unreadable(metrics, stage_of, ref)
    return problems + metrics_problems(metrics, stage_of, tolerance, per_metric or {}, ref)


def _label(stage: Any) -> str:
    """`train` for a stage of ./dvc.yaml, `pretrain/dvc.yaml:joint` for another file's."""
    where = Path(stage.path_in_repo).as_posix()
    return stage.name if where == "dvc.yaml" else f"{where}:{stage.name}"


def _relpath(path: str, root: str) -> str:
    return Path(os.path.relpath(path, root)).as_posix()


def _changes(entries: list) -> str:
    """A stage's `dvc status` entries on one line."""
    return "; ".join(e if isinstance(e, str) else json.dumps(e) for e in entries)


def metrics_problems(
    diff: dict, stage_of: dict[str, str], tolerance: float, per_metric: dict[str, float], ref: str
) -> list[Problem]:
    """The keys of a `dvc metrics diff --all` further apart than their tolerance."""
    errors = diff.get("errors", {}).values()
    unread = {path for files in errors if isinstance(files, dict) for path in files}
    problems = []
    for path, keys in sorted(diff.get("diff", {}).items()):
        for key, change in sorted(keys.items()):
            if path in unread or key.rsplit(".", 1)[-1] in VOLATILE_METRICS:
                continue
            limit = per_metric.get(f"{path}:{key}", tolerance)
            message = _metric_difference(change.get("old"), change.get("new"), limit, ref)
            if message:
                problems.append(Problem(stage_of.get(path), path, f"{key}: {message}"))
    return problems


def data_problems(diff: dict, data_outs: dict[str, str], ref: str) -> list[Problem]:
    """One problem per data output that `dvc diff` lists, with the files it names inside."""
    heads: dict[str, str] = {}
    files: dict[str, list[str]] = {}
    for kind in ("added", "deleted", "modified", "renamed"):
        for entry in diff.get(kind, []):
            path = entry["path"]["new"] if kind == "renamed" else entry["path"]
            path = Path(path).as_posix()  # a directory's path ends with a separator
            out = next((o for o in data_outs if path == o or path.startswith(f"{o}/")), None)
            if out is None:
                continue
            files.setdefault(out, [])
            if path != out:
                files[out].append(path)
            elif isinstance(entry.get("hash"), dict):
                heads[out] = f"md5 {entry['hash']['new']} now, {entry['hash']['old']}"
                heads[out] += f" in dvc.lock at {ref}"
            else:
                heads[out] = f"{kind} since dvc.lock at {ref} (md5 {entry.get('hash')})"
    problems = []
    for out, inside in sorted(files.items()):
        listed = f"; files that differ: {', '.join(sorted(inside))}" if inside else ""
        head = heads.get(out, f"differs from dvc.lock at {ref}")
        problems.append(Problem(data_outs[out], out, head + listed))
    return problems


def unreadable(result: dict, stage_of: dict[str, str], ref: str) -> list[Problem]:
    """The files a params or metrics diff could not read, on either side."""
    problems = []
    for rev, errors in sorted(result.get("errors", {}).items()):
        label = ref if rev != "workspace" else "the workspace"
        for path, err in sorted((errors if isinstance(errors, dict) else {"*": errors}).items()):
            problems.append(Problem(stage_of.get(path), path, f"unreadable at {label}: {err}"))
    return problems


def _metric_difference(old: Any, new: Any, tolerance: float, ref: str) -> str | None:
    if old is None or new is None:
        return f"{new!r} now, {old!r} at {ref} (present on one side only)"
    if _is_number(old) and _is_number(new):
        if math.isnan(old) and math.isnan(new):
            return None
        gap = abs(new - old)
        if gap <= tolerance:  # NaN on one side compares False: reported below
            return None
        return f"{new!r} now, {old!r} at {ref}: |difference| {gap:.3g} > tolerance {tolerance}"
    return None if old == new else f"{new!r} now, {old!r} at {ref}"


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def flatten_metrics(tree: dict, prefix: str = "") -> dict[str, Any]:
    """Nested dicts as dotted keys, as `dvc metrics` names them: {"train": {"loss": 1.0}} ->
    {"train.loss": 1.0} (bench.numerics reads metrics files with it)."""
    flat: dict[str, Any] = {}
    for key, value in tree.items():
        if isinstance(value, dict):
            flat.update(flatten_metrics(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat
