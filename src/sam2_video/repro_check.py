"""Is the workspace a reproduction of the committed run? Problems, each naming stage and file.

The committed `dvc.lock` (at a git ref, HEAD by default) is the record of the default run.
After `dvc repro` in a clean clone this checks that

- the workspace agrees with the workspace `dvc.lock` (`dvc status --json` is empty) and a
  second `dvc repro` would run nothing (`dvc repro --dry`);
- the outputs of the data stages (fetch, shard) have exactly the md5 of the committed
  `dvc.lock`. The hashes are DVC's own: `dvc repro` writes what it computed for the outputs
  into the workspace `dvc.lock`, and `dvc status` (which re-hashes the workspace) proves
  that file current, so no hashing is re-implemented here. Where both directory listings
  are in the local cache, the files that differ inside an output directory are named;
- the metrics files that `dvc.yaml` declares match the committed ones within an absolute
  tolerance: training on CPU is bit-exact on one machine, but other processors run other
  SIMD kernels (AVX2 vs AVX-512, MKL's Intel vs AMD paths, ARM) whose float sums round
  differently, and hundreds of optimizer steps amplify that last-bit noise.
"""

from __future__ import annotations

import json
import math
import os
import re
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

DATA_STAGES = ("fetch", "shard")
# Metric keys (at any depth) that describe how a run went, not what it produced: wall-clock
# time, and the encoder feature cache's use (a resumed run starts with an empty cache;
# "clips" is the name older runs gave "cached_clips").
VOLATILE_METRICS = frozenset({"seconds", "hit_rate", "clips", "cached_clips", "megabytes"})


@dataclass(frozen=True)
class Problem:
    stage: str
    path: str
    message: str

    def __str__(self) -> str:
        return f"stage '{self.stage}': {self.path}: {self.message}"


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
    repo = Path(repo_dir)
    if not (repo / "dvc.yaml").is_file():
        raise FileNotFoundError(f"{repo / 'dvc.yaml'}: not found; pass the project's root")
    committed_lock = _committed_yaml(repo, ref, "dvc.lock")
    if committed_lock is None:
        return [
            Problem(
                "(all)",
                "dvc.lock",
                f"not committed at {ref}: run `dvc repro`, then commit dvc.lock and the metrics",
            )
        ]
    problems = workspace_problems(repo)
    current_lock = _read_yaml(repo / "dvc.lock")
    cache = _cache_dir(repo)
    for stage in data_stages:
        problems += data_stage_problems(stage, committed_lock, current_lock, ref, cache)
    for stage, path in declared_metrics(repo / "dvc.yaml"):
        problems += metrics_problems(repo, stage, path, ref, tolerance, per_metric)
    return problems


# ---- the workspace against its own dvc.lock ------------------------------------------------


def workspace_problems(repo: Path) -> list[Problem]:
    """What `dvc status` reports changed; if nothing, the stages `dvc repro` would still run."""
    status = json.loads(_dvc(repo, "status", "--json").stdout or "{}")
    problems = [
        Problem(stage, path, f"{what} ({state}) per `dvc status`: run `dvc repro` first")
        for stage, entries in status.items()
        for path, what, state in _status_entries(entries)
    ]
    if problems:  # `dvc repro --dry` would only list the same stages again
        return problems
    dry_run = _dvc(repo, "repro", "--dry").stdout
    return [
        Problem(stage, "dvc.yaml", "a second `dvc repro` would run this stage again")
        for stage in re.findall(r"Running stage '([^']+)'", dry_run)
    ]


def _status_entries(entries: list) -> list[tuple[str, str, str]]:
    """A stage's `dvc status --json` entries as (path, what changed, state)."""
    rows = []
    for entry in entries:
        if isinstance(entry, str):  # e.g. "always changed"
            rows.append(("dvc.yaml", entry, "stage"))
            continue
        for what, files in entry.items():
            changed = files.items() if isinstance(files, dict) else [("dvc.yaml", str(files))]
            for path, state in changed:
                if isinstance(state, dict):  # params: {"params.yaml": {"lr": "modified"}}
                    rows += [(f"{path}:{key}", what, str(v)) for key, v in state.items()]
                else:
                    rows.append((path, what, str(state)))
    return rows


# ---- data stages: exact output hashes --------------------------------------------------------


def data_stage_problems(
    stage: str, committed_lock: dict, current_lock: dict | None, ref: str, cache: Path
) -> list[Problem]:
    """Outputs of `stage` whose md5 differs from the committed dvc.lock, with the likely cause."""
    old = committed_lock.get("stages", {}).get(stage)
    new = (current_lock or {}).get("stages", {}).get(stage)
    if old is None:
        return [Problem(stage, "dvc.lock", f"stage missing from dvc.lock at {ref}")]
    if new is None:
        return [
            Problem(stage, "dvc.lock", "stage missing from the workspace dvc.lock: run `dvc repro`")
        ]
    old_outs, new_outs = _by_path(old.get("outs", [])), _by_path(new.get("outs", []))
    cause = _cause(old, new)
    problems = []
    for path in sorted(old_outs.keys() | new_outs.keys()):
        old_md5 = old_outs.get(path, {}).get("md5")
        new_md5 = new_outs.get(path, {}).get("md5")
        if old_md5 != new_md5:
            detail = _changed_files(cache, path, old_md5, new_md5)
            problems.append(
                Problem(
                    stage, path, f"md5 {new_md5} now, {old_md5} in dvc.lock at {ref}{detail}{cause}"
                )
            )
    return problems


def _by_path(entries: list[dict]) -> dict[str, dict]:
    return {entry["path"]: entry for entry in entries}


def _cause(old_stage: dict, new_stage: dict) -> str:
    """The params and deps that differ between two lock entries of a stage, as a hint."""
    old_params, new_params = _lock_params(old_stage), _lock_params(new_stage)
    changes = [
        f"param {key} {old_params.get(key)!r} -> {new_params.get(key)!r}"
        for key in sorted(old_params.keys() | new_params.keys())
        if old_params.get(key) != new_params.get(key)
    ]
    old_deps, new_deps = _by_path(old_stage.get("deps", [])), _by_path(new_stage.get("deps", []))
    changes += [
        f"dep {path}"
        for path in sorted(old_deps.keys() | new_deps.keys())
        if old_deps.get(path, {}).get("md5") != new_deps.get(path, {}).get("md5")
    ]
    return f"; changed since: {', '.join(changes)}" if changes else ""


def _lock_params(stage_entry: dict) -> dict[str, Any]:
    """{"params.yaml:shard.max_objects": 3, ...} from a lock entry's params section."""
    flat: dict[str, Any] = {}
    for params_file, values in stage_entry.get("params", {}).items():
        flat.update(flatten_metrics(values, f"{params_file}:"))
    return flat


def _changed_files(cache: Path, out: str, old_md5: str | None, new_md5: str | None) -> str:
    """Files that differ inside a directory output, when both listings are in the cache."""
    old_files, new_files = _dir_listing(cache, old_md5), _dir_listing(cache, new_md5)
    if old_files is None or new_files is None:
        return ""
    names = sorted(old_files.keys() | new_files.keys())
    changed = [f"{out}/{name}" for name in names if old_files.get(name) != new_files.get(name)]
    return f"; files that differ: {', '.join(changed)}"


def _dir_listing(cache: Path, md5: str | None) -> dict[str, str] | None:
    """relpath -> md5 of a DVC directory object (`<md5>.dir`), or None if not cached."""
    if not md5 or not md5.endswith(".dir"):
        return None
    for root in (cache / "files" / "md5", cache):  # DVC 3 layout, then DVC 2
        listing = root / md5[:2] / md5[2:]
        if listing.is_file():
            return {entry["relpath"]: entry["md5"] for entry in json.loads(listing.read_text())}
    return None


# ---- metrics: equal within a tolerance -------------------------------------------------------


def declared_metrics(dvc_yaml: Path) -> list[tuple[str, str]]:
    """(stage, path) of every metrics file `dvc.yaml` declares, in file order."""
    stages = _read_yaml(dvc_yaml)
    if stages is None:
        raise FileNotFoundError(f"{dvc_yaml}: file not found; run from the project root")
    found = []
    for stage, spec in stages.get("stages", {}).items():
        for entry in spec.get("metrics", []):
            found += [(stage, path) for path in (entry if isinstance(entry, dict) else [entry])]
    return found


def metrics_problems(
    repo: Path,
    stage: str,
    path: str,
    ref: str,
    tolerance: float,
    per_metric: dict[str, float] | None = None,
) -> list[Problem]:
    """Keys of metrics file `path` missing on one side, or further apart than `tolerance`."""
    committed_text = _git_show(repo, ref, path)
    if committed_text is None:
        return [
            Problem(
                stage,
                path,
                f"not committed at {ref} (git-ignored?): commit the metrics of the default run",
            )
        ]
    current_file = repo / path
    if not current_file.is_file():
        return [Problem(stage, path, "missing from the workspace: run `dvc repro`")]
    old = flatten_metrics(json.loads(committed_text))
    new = flatten_metrics(json.loads(current_file.read_text()))
    problems = []
    for key in sorted(old.keys() | new.keys()):
        if key.rsplit(".", 1)[-1] in VOLATILE_METRICS:
            continue
        allowed = (per_metric or {}).get(f"{path}:{key}", tolerance)
        message = _metric_difference(old.get(key), new.get(key), allowed, ref)
        if message:
            problems.append(Problem(stage, path, f"{key}: {message}"))
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


# ---- small helpers ---------------------------------------------------------------------------


def flatten_metrics(tree: dict, prefix: str = "") -> dict[str, Any]:
    """Nested dicts as dotted keys: {"train": {"loss": 1.0}} -> {"train.loss": 1.0}."""
    flat: dict[str, Any] = {}
    for key, value in tree.items():
        if isinstance(value, dict):
            flat.update(flatten_metrics(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def _read_yaml(path: Path) -> dict | None:
    if not path.is_file():
        return None
    try:
        return yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as err:
        raise ValueError(f"{path}: not valid YAML ({err})") from None


def _committed_yaml(repo: Path, ref: str, path: str) -> dict | None:
    text = _git_show(repo, ref, path)
    return None if text is None else (yaml.safe_load(text) or {})


def _git_show(repo: Path, ref: str, path: str) -> str | None:
    """The text of `path` (relative to `repo`) at `ref`, or None if it is not committed."""
    english = {**os.environ, "LC_ALL": "C"}  # the messages below are matched in English
    cmd = ["git", "show", f"{ref}:./{path}"]
    out = subprocess.run(cmd, cwd=repo, capture_output=True, text=True, env=english)
    if out.returncode == 0:
        return out.stdout
    if "does not exist in" in out.stderr or "exists on disk, but not in" in out.stderr:
        return None
    # not a git repository, or no such ref: nothing to compare against
    raise ValueError(f"`git show {ref}:{path}` failed in {repo}: {out.stderr.strip()}")


def _cache_dir(repo: Path) -> Path:
    lines = _dvc(repo, "cache", "dir").stdout.strip().splitlines()
    return Path(lines[-1]) if lines else repo / ".dvc" / "cache"


def _dvc(repo: Path, *args: str) -> subprocess.CompletedProcess:
    """Run DVC of this interpreter's environment in `repo`; a failure names the command."""
    cmd = [sys.executable, "-m", "dvc", *args]
    out = subprocess.run(cmd, cwd=repo, capture_output=True, text=True)
    if out.returncode != 0:
        raise ValueError(f"`dvc {' '.join(args)}` failed in {repo}:\n{out.stderr.strip()}")
    return out
