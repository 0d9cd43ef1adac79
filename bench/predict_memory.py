"""Peak memory of prediction against video length (issue 27 item 3).

`python -m bench.predict_memory` predicts a 20-frame and a 200-frame video (same frames
size) with a SAM2.1 Hiera-T of random weights (the sam2 package's config, torch seed 0) at
256 px, two objects prompted by their masks on frame 0, each case in a fresh process, and
prints each process's peak RSS (ru_maxrss) and the ratio. `--src DIR` runs another
checkout's code (e.g. `git worktree add /tmp/old HEAD~1`, then `--src /tmp/old/src`).
Goal: peak(200 frames) / peak(20 frames) <= 1.2.
"""

from __future__ import annotations

import argparse
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
MODEL, SIZE, OBJECTS, GOAL = "sam2.1_hiera_tiny", 256, 2, 1.2


def child(num_frames: int) -> None:
    """One case, in this process: print 'frames, MiB before predicting, peak MiB, seconds'."""
    import numpy as np
    import torch

    from sam2_video.data.sources import synthetic
    from sam2_video.evaluate.predict import object_prompts, predict_masks
    from sam2_video.model import build

    torch.manual_seed(0)
    model = build.build_model(build.load_model_config(MODEL, SIZE)).eval()
    scene = synthetic.render_scene(
        np.random.default_rng(0), synthetic.DOMAINS["target"], num_frames, OBJECTS, SIZE
    )
    prompts = object_prompts(scene.visible)
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    start = time.perf_counter()
    masks = predict_masks(model, scene.frames, prompts, "mask", SIZE)
    seconds = time.perf_counter() - start
    assert masks.shape[:2] == (num_frames, OBJECTS)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"{num_frames} {before:.0f} {peak:.0f} {seconds:.1f}")


def run_case(num_frames: int, src: Path) -> tuple[float, float, float] | None:
    """(MiB before predicting, peak MiB, seconds), or None if the process died (OOM)."""
    env = dict(os.environ, PYTHONPATH=f"{src}{os.pathsep}{REPO}")
    cmd = [sys.executable, "-m", "bench.predict_memory", "--child", str(num_frames)]
    out = subprocess.run(cmd, env=env, cwd=REPO, capture_output=True, text=True)
    if out.returncode < 0:
        return None
    out.check_returncode()
    _, before, peak, seconds = out.stdout.split()
    return float(before), float(peak), float(seconds)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--src", type=Path, default=REPO / "src", help="code to measure")
    parser.add_argument("--frames", type=int, nargs="+", default=[20, 200])
    parser.add_argument("--child", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child is not None:
        child(args.child)
        return
    print(f"{MODEL} {SIZE}px, random weights, {OBJECTS} objects (mask prompts), code: {args.src}")
    print("| frames | RSS before predict MiB | peak RSS MiB | predict s |")
    print("|---|---|---|---|")
    peaks = []
    for n in args.frames:
        case = run_case(n, args.src)
        if case is None:
            print(f"| {n} | - | killed (out of memory?) | - |")
            return
        before, peak, seconds = case
        peaks.append(peak)
        print(f"| {n} | {before:.0f} | {peak:.0f} | {seconds:.1f} |", flush=True)
    ratio = peaks[-1] / peaks[0]
    verdict = "ok" if ratio <= GOAL else "MISSED"
    first, last = args.frames[0], args.frames[-1]
    print(f"peak {last} / {first} frames: {ratio:.2f}x (goal <= {GOAL}x) {verdict}")


if __name__ == "__main__":
    main()
