"""`python -m bench.numerics`: how far the default run's metrics move with the CPU's float
rounding, what a numerically pinned CPU path costs, and the per-metric tolerances of
`sam2-video repro-check` derived from that spread.

Another CPU (AVX2 vs AVX-512, Intel vs AMD) runs other SIMD kernels that add the same
floats in another order. One machine can provoke the same kind of last-bit differences by
choosing other kernels itself: ATen's vector ISA (`ATEN_CPU_CAPABILITY`), the thread count
(how reductions are split), MKL's code path (`MKL_CBWR`), oneDNN's ISA. Each setting below
runs the train and evaluate stages of the default pipeline (the data stages are exact on
any x86-64 CPU, and are run once) in a clone of HEAD, and records the metrics, the weights'
hash and the stages' seconds.

- spread: per metric, the largest |difference| from the reference run over all other
  settings; tolerance = max(FLOOR, FACTOR x spread), written to bench/tolerances.json, which
  `make repro-check` passes to `sam2-video repro-check --tolerances`.
- pinning: the same run with ATen, MKL and oneDNN forced to their baseline paths, twice with
  different `ATEN_CPU_CAPABILITY` requests: bit-identical weights or not, and its cost.
Writes the table under "## Numerics across CPUs" in bench/RESULTS.md.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench.markdown import replace_section
from sam2_video.repro_check import VOLATILE_METRICS, flatten_metrics

REPO = Path(__file__).resolve().parents[1]
RESULTS, TOLERANCES = REPO / "bench" / "RESULTS.md", REPO / "bench" / "tolerances.json"
RUNS = REPO / "bench" / "numerics_runs.json"  # each setting's metrics, hash and seconds
METRIC_FILES = ("metrics/eval.json", "dvclive/train/metrics.json")
FACTOR = 3.0  # a few settings on one machine under-sample the processors CI may meet
# a metric that did not move in any setting (the base model's, the step counts) may still
# move on another CPU by a few objects' last pixels: 5 units in the 4th decimal
FLOOR = 5e-4
PINNED = {"MKL_CBWR": "COMPATIBLE", "ONEDNN_MAX_CPU_ISA": "SSE41"}
SETTINGS = {  # name: (extra environment, threads, pinned)
    "reference": ({}, 2, False),
    "aten-default": ({"ATEN_CPU_CAPABILITY": "default"}, 2, False),
    "1-thread": ({}, 1, False),
    "mkl-avx2": ({"MKL_CBWR": "AVX2"}, 2, False),
    "pinned": ({**PINNED, "ATEN_CPU_CAPABILITY": "default"}, 2, True),
    "pinned-aten-avx2": ({**PINNED, "ATEN_CPU_CAPABILITY": "avx2"}, 2, True),
}


def sh(cmd: list[str], cwd: Path, env: dict[str, str]) -> None:
    out = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True)
    if out.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed:\n{out.stdout[-2000:]}\n{out.stderr[-3000:]}")


def environment(clone: Path, extra: dict[str, str], threads: int) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("ATEN_", "MKL_", "ONEDNN"))}
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env['PATH']}"
    env["PYTHONPATH"] = str(clone / "src")
    env["OMP_NUM_THREADS"] = env["MKL_NUM_THREADS"] = str(threads)
    return {**env, **extra}


def run_setting(clone: Path, extra: dict[str, str], threads: int) -> dict:
    """train + evaluate from scratch (no resume state) under one numeric setting."""
    env = environment(clone, extra, threads)
    sh(["rm", "-rf", "data/checkpoints", "data/model"], clone, env)
    seconds = {}
    for stage in ("train", "evaluate"):
        t0 = time.perf_counter()
        sh([sys.executable, f"stages/{stage}.py"], clone, env)
        seconds[stage] = round(time.perf_counter() - t0, 1)
    metrics = {}
    for path in METRIC_FILES:
        flat = flatten_metrics(json.loads((clone / path).read_text()))
        metrics.update({f"{path}:{k}": v for k, v in flat.items()})
    weights = (clone / "data" / "model" / "sam2_finetuned.pt").read_bytes()
    return {
        "metrics": metrics,
        "weights_sha256": hashlib.sha256(weights).hexdigest()[:16],
        "seconds": seconds,
    }


def numeric(metrics: dict) -> dict[str, float]:
    return {
        k: float(v)
        for k, v in metrics.items()
        if isinstance(v, int | float)
        and not isinstance(v, bool)
        and k.rsplit(".", 1)[-1].rsplit(":", 1)[-1] not in VOLATILE_METRICS
    }


def spread(runs: dict[str, dict], names: list[str]) -> dict[str, float]:
    ref = numeric(runs["reference"]["metrics"])
    return {
        key: max(abs(numeric(runs[n]["metrics"]).get(key, value) - value) for n in names)
        for key, value in ref.items()
    }


def tolerances(spreads: dict[str, float]) -> dict[str, float]:
    return {key: round(max(FLOOR, FACTOR * s), 4) for key, s in sorted(spreads.items())}


def report(runs: dict[str, dict], spreads: dict[str, float], tol: dict[str, float]) -> str:
    ref = runs["reference"]
    lines = [
        "`python -m bench.numerics` (train + evaluate of the default run per setting, one "
        "machine; see its docstring).",
        "",
        "| setting | env | threads | weights sha256 | = reference | train s | evaluate s |",
        "|---|---|---|---|---|---|---|",
    ]
    for name, run in runs.items():
        extra, threads, _ = SETTINGS[name]
        env = " ".join(f"{k}={v}" for k, v in extra.items()) or "-"
        same = "yes" if run["weights_sha256"] == ref["weights_sha256"] else "no"
        s = run["seconds"]
        lines.append(
            f"| {name} | {env} | {threads} | {run['weights_sha256']} | {same} | {s['train']} "
            f"| {s['evaluate']} |"
        )
    pinned = [n for n in runs if SETTINGS[n][2]]
    if len(pinned) == 2:
        a, b = (runs[n]["weights_sha256"] for n in pinned)
        cost = runs[pinned[0]]["seconds"]["train"] / ref["seconds"]["train"]
        lines += [
            "",
            f"Pinned path: weights {'identical' if a == b else 'differ'} across the two ATen "
            f"requests; train stage {cost:.2f}x the reference's time.",
        ]
    lines += [
        "",
        "| metric | spread (max \\|diff\\| from reference) | tolerance |",
        "|---|---|---|",
    ]
    lines += [f"| {k} | {spreads[k]:.2g} | {tol[k]} |" for k in sorted(tol)]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--settings", nargs="+", default=list(SETTINGS), choices=list(SETTINGS))
    parser.add_argument(
        "--from-runs", action="store_true", help=f"re-derive the tolerances from {RUNS.name}"
    )
    args = parser.parse_args()
    if args.from_runs:
        report_and_write(json.loads(RUNS.read_text()))
        return
    with tempfile.TemporaryDirectory() as tmp:
        clone = Path(tmp) / "clone"
        env = environment(clone, {}, 2)
        sh(["git", "clone", "-q", str(REPO), str(clone)], REPO, env)
        sh(["dvc", "repro", "shard"], clone, env)  # data stages: exact everywhere, run once
        runs = {}
        for name in args.settings:
            extra, threads, _ = SETTINGS[name]
            runs[name] = run_setting(clone, extra, threads)
            print(name, runs[name]["weights_sha256"], runs[name]["seconds"], flush=True)
    RUNS.write_text(json.dumps(runs, indent=1) + "\n")
    report_and_write(runs)


def report_and_write(runs: dict[str, dict]) -> None:
    # every setting is another set of kernels, as another CPU runs: all count
    spreads = spread(runs, [n for n in runs if n != "reference"])
    tol = tolerances(spreads)
    TOLERANCES.write_text(json.dumps(tol, indent=2, sort_keys=True) + "\n")
    body = report(runs, spreads, tol)
    print(body)
    RESULTS.write_text(replace_section(RESULTS.read_text(), "Numerics across CPUs", body))


if __name__ == "__main__":
    main()
