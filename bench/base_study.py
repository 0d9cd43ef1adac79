"""Fine-tuning gains across tiny bases and fine-tuning seeds (issue 28).

`python -m bench.base_study --work DIR` builds a tiny base for each `--pretrain-seeds`
(the pretrain pipeline's two stages, pretrain/params.yaml with that `pretrain.seed`, in a
clone of this checkout's HEAD; a base already in DIR/bases is reused; `--shipped` takes
the shipped tiny base, the `pretrain.seed: 0` file the joint stage wrote, as seed 0's), then
runs the default pipeline on every base with every fine-tuning `--seeds`
(`dvc exp run -S seed=S -S fetch.checkpoint=BASE`, plus each `--set KEY=VALUE`, in a
second clone) and prints one table:
per run, the base's J&F on the target domain (mask prompt), the gain of each prompt kind
with its 95 % interval, the best step and the tune split's J&F at each validation step;
then the mean gains and the runs with a negative mask gain. Results go to
DIR/results.json as they come, so a second call resumes; DIR belongs to one commit and one
recipe (DIR/study.json), another study is refused.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
KINDS = ("mask", "points", "box")
TINY_BASE = Path("src/sam2_video/model/weights/tiny_base.pt")


def run(cmd: list[str] | str, cwd: Path, log: Path) -> None:
    env = os.environ | {"PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}"}
    with log.open("a") as out:
        subprocess.run(cmd, cwd=cwd, env=env, check=True, stdout=out, stderr=subprocess.STDOUT)


def clone(dest: Path) -> Path:
    """A clone of HEAD at dest, made once; one of other code is refused, not reused (a
    --work of an earlier study would otherwise run that code)."""
    if not dest.exists():
        subprocess.run(["git", "clone", "-q", str(REPO), str(dest)], check=True)
    if head(dest) != head(REPO):
        raise SystemExit(f"{dest}: a clone of another commit than HEAD; use a new --work")
    return dest


def head(repo: Path) -> str:
    out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=repo, capture_output=True, text=True)
    if out.returncode:
        raise SystemExit(f"{repo}: not a git clone ({out.stderr.strip()}); use a new --work")
    return out.stdout.strip()


def claim(work: Path, recipe: dict) -> None:
    """Tie `work` to one study: this checkout's HEAD and `recipe` (the params changes). The
    bases and results it caches are keyed by seed only, so a --work of another study is
    refused rather than reported as this one's."""
    path, study = work / "study.json", {"commit": head(REPO), **recipe}
    if not path.exists():
        path.write_text(json.dumps(study, indent=1))
    elif (found := json.loads(path.read_text())) != study:
        raise SystemExit(f"{work}: holds the study {found}, not {study}; use a new --work")


def build_base(work: Path, seed: int, shipped: bool, changes: tuple[str, ...] = ()) -> Path:
    """The tiny base of pretrain.seed `seed` and the pretrain params `changes`
    (KEY=VALUE, keys of pretrain/params.yaml's section): built once into
    work/bases/seed<S>.pt. A stage whose params and code are as pretrain/dvc.lock records
    is not re-run (seed 0's video stage, when `changes` are the joint stage's)."""
    base = work / "bases" / f"seed{seed}.pt"
    if base.exists():
        return base
    base.parent.mkdir(parents=True, exist_ok=True)
    if shipped and seed == 0:
        shutil.copyfile(REPO / TINY_BASE, base)
        return base
    repo = clone(work / f"pretrain-seed{seed}")
    params = repo / "pretrain" / "params.yaml"
    text = params.read_text()
    for key, value in [("seed", str(seed))] + [c.split("=", 1) for c in changes]:
        text, found = re.subn(rf"\n  {key}: .*\n", f"\n  {key}: {value}\n", text)
        if not found:
            raise SystemExit(f"pretrain/params.yaml: no key pretrain.{key}")
    params.write_text(text)
    # DVC re-runs the stages whose params or code changed (make tiny-base's thaw, without -f)
    stages = "pretrain/dvc.yaml:pretrain pretrain/dvc.yaml:joint"
    cmd = f"dvc unfreeze {stages} && dvc repro pretrain/dvc.yaml"
    run(["bash", "-c", cmd], repo, work / f"pretrain-seed{seed}.log")
    shutil.copyfile(repo / TINY_BASE, base)  # the joint stage's output: the tiny base
    return base


def fine_tune(work: Path, base: Path, seed: int, changes: tuple[str, ...] = ()) -> dict:
    """The default pipeline on `base` with fine-tuning seed `seed` and the params `changes`
    (KEY=VALUE): its headline metrics (its per-object J&F kept as
    work/per_object/<base>-<seed>.json)."""
    repo = clone(work / "runs")
    env = f"PYTHONPATH={repo / 'src'}"
    sets = "".join(f" -S {shlex.quote(change)}" for change in changes)
    cmd = f"{env} dvc exp run -S seed={seed} -S fetch.checkpoint={base}{sets}"
    run(["bash", "-c", cmd], repo, work / "runs.log")
    metrics = json.loads((repo / "metrics" / "eval.json").read_text())
    kept = work / "per_object" / f"{base.stem}-{seed}.json"
    kept.parent.mkdir(exist_ok=True)
    shutil.copyfile(repo / "metrics" / "per_object.json", kept)
    live = repo / "dvclive" / "train"
    train = json.loads((live / "metrics.json").read_text())
    curve = (live / "plots" / "metrics" / "val" / "jf.tsv").read_text().split()[2:]
    steps, values = curve[::2], curve[1::2]
    tune = {int(step): round(float(jf), 4) for step, jf in zip(steps, values, strict=True)}
    return metrics | {"best_step": train["best_step"], "tune_jf": tune}


def table(results: dict) -> str:
    lines = [
        "| base (pretrain.seed) | seed | jf_base (mask) | gain mask | gain points | gain box "
        "| best step | tune J&F by step |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for key, m in sorted(results.items()):
        base, seed = key.split("/")
        gains = " | ".join(
            f"{m[f'jf_gain_{k}']:+.3f} [{m[f'jf_gain_{k}_lo']:+.3f}, {m[f'jf_gain_{k}_hi']:+.3f}]"
            for k in KINDS
        )
        tune = ", ".join(f"{step}: {jf:.3f}" for step, jf in m.get("tune_jf", {}).items())
        row = f"| {base} | {seed} | {m['jf_base_mask']:.3f} | {gains} | {m['best_step']} "
        lines.append(f"{row}| {tune} |")
    if results:
        means = [sum(m[f"jf_gain_{k}"] for m in results.values()) / len(results) for k in KINDS]
        negative = sum(m["jf_gain_mask"] < 0 for m in results.values())
        lines.append(
            f"\nmean gain over {len(results)} runs, mask / points / box: "
            + " / ".join(f"{g:+.3f}" for g in means)
            + f"; runs with a negative mask gain: {negative} of {len(results)}"
        )
    return "\n".join(lines)


def diagnosis(work: Path) -> str:
    """Per run, from its per-object J&F (mask prompt): the gain on the objects the base
    tracks well (J&F >= 0.5) and on those it loses, and the share of objects that fine-tuning
    moves by more than 0.1 either way."""
    lines = [
        "| run (base-seed) | objects | base J&F | gain where base >= 0.5 (n) | gain where "
        "base < 0.5 (n) | better by > 0.1 | worse by > 0.1 |",
        "|---|---|---|---|---|---|---|",
    ]
    for path in sorted((work / "per_object").glob("*.json")):
        rows = [r for r in json.loads(path.read_text()) if r["prompt"] == "mask"]
        gain = [r["jf"] - r["jf_base"] for r in rows]
        good = [g for g, r in zip(gain, rows, strict=True) if r["jf_base"] >= 0.5]
        lost = [g for g, r in zip(gain, rows, strict=True) if r["jf_base"] < 0.5]
        base = sum(r["jf_base"] for r in rows) / len(rows)
        better = sum(g > 0.1 for g in gain) / len(gain)
        worse = sum(g < -0.1 for g in gain) / len(gain)
        lines.append(
            f"| {path.stem} | {len(rows)} | {base:.3f} | {_mean(good):+.3f} ({len(good)}) "
            f"| {_mean(lost):+.3f} ({len(lost)}) | {better:.0%} | {worse:.0%} |"
        )
    return "\n".join(lines)


def _mean(values: list[float]) -> float:
    return sum(values) / len(values) if values else float("nan")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work", type=Path, required=True, help="bases, clones and results")
    parser.add_argument("--pretrain-seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--shipped", action="store_true", help="seed 0's base: the shipped file")
    parser.add_argument(
        "--set",
        dest="changes",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="a params change of the recipe under study (dvc exp run -S), repeatable; use "
        "another --work per recipe",
    )
    parser.add_argument(
        "--pretrain-set",
        dest="pretrain_changes",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="a pretrain/params.yaml change for the bases built (not --shipped's), repeatable",
    )
    args = parser.parse_args()
    work = args.work.resolve()
    work.mkdir(parents=True, exist_ok=True)
    recipe = {"shipped": args.shipped, "set": args.changes, "pretrain_set": args.pretrain_changes}
    claim(work, recipe)
    out = work / "results.json"
    results = json.loads(out.read_text()) if out.exists() else {}
    for pretrain_seed in args.pretrain_seeds:
        base = build_base(work, pretrain_seed, args.shipped, tuple(args.pretrain_changes))
        for seed in args.seeds:
            key = f"{pretrain_seed}/{seed}"
            if key not in results:
                results[key] = fine_tune(work, base, seed, tuple(args.changes))
                out.write_text(json.dumps(results, indent=1))
                print(f"base {pretrain_seed}, seed {seed}: {results[key]['jf_gain_mask']:+.3f}")
    print(table(results))
    print()
    print(diagnosis(work))


if __name__ == "__main__":
    main()
