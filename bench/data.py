"""`python -m bench.data`: the data pipeline against baselines measured in the same run.

On one generated COCO-format video dataset (real JPEGs + COCO JSON, `synthetic.target`):
  (a) shard build throughput vs its floor: decoding + resizing the same JPEGs and nothing
      else, with the same number of worker processes (goal >= 0.8x);
  (b) reading training clips from shards (ShardReader[i]) vs the seed project's approach,
      which on every access opened each frame with PIL, decoded each annotation with
      pycocotools and resized (goal >= 5x);
  (c) peak RSS of the shard build when the dataset grows 4x (goal < 1.5x), each build in
      its own subprocess so the numbers are that build's alone.
Prints a table and writes it under "## Data" in bench/RESULTS.md (other sections kept).
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import json
import multiprocessing
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from types import MappingProxyType
from typing import Any

import numpy as np
from PIL import Image

from bench.floor import decode_and_resize
from bench.markdown import replace_section
from sam2_video.data import coco, rle, shards
from sam2_video.data.synthetic import SyntheticSpec, write_coco_video
from sam2_video.files import write_bytes_atomic

RESULTS = Path(__file__).with_name("RESULTS.md")
SPEC = SyntheticSpec("target", num_videos=24, num_frames=16, objects_per_video=(2, 4),
                     size=256, seed=0)  # fmt: skip
# read only: the default of the functions below
CLIP = MappingProxyType(
    {"clip_length": 8, "stride": 4, "max_objects": 3, "min_area": 16, "image_size_max_side": 128}
)
WORKERS = 2
CLIPS_PER_SHARD = 64
REPEATS = 3
GROWTH = 4


def _best_seconds(run: Callable[[], Any], repeats: int = REPEATS) -> float:
    """Fastest of `repeats` wall-clock runs: the least disturbed by other load."""
    return _best_seconds_interleaved({"run": run}, repeats)["run"]


def _best_seconds_interleaved(runs: dict[str, Callable[[], Any]], repeats: int) -> dict:
    """Fastest of `repeats` wall-clock runs of each, taken in turns (a, b, a, b, ...) so that
    a slow spell of the machine hits both sides of a ratio, not just one."""
    times: dict[str, list[float]] = {name: [] for name in runs}
    for _ in range(repeats):
        for name, run in runs.items():
            start = time.perf_counter()
            run()
            times[name].append(time.perf_counter() - start)
    return {name: min(t) for name, t in times.items()}


# ---------------------------------------------------------------------------- (a) shard build


def _floor(videos: Sequence[coco.CocoVideo], clip: Mapping[str, Any] = CLIP) -> int:
    context = multiprocessing.get_context("spawn")  # as build_split's pool
    work = functools.partial(decode_and_resize, max_side=clip["image_size_max_side"])
    # and with its workers' allocator setting: decoding alone gains from it as much
    setting = shards.reuse_freed_memory
    with ProcessPoolExecutor(WORKERS, mp_context=context, initializer=setting) as pool:
        return sum(pool.map(work, videos))


def _build(
    videos: Sequence[coco.CocoVideo],
    out_dir: Path,
    workers: int = WORKERS,
    clip: Mapping[str, Any] = CLIP,
) -> dict:
    clip_fn = functools.partial(coco.video_clips, **clip)
    return shards.build_split(videos, clip_fn, out_dir, seed=0, workers=workers,
                              clips_per_shard=CLIPS_PER_SHARD, params=dict(clip))  # fmt: skip


def bench_shard_build(
    videos: Sequence[coco.CocoVideo],
    work: Path,
    clip: Mapping[str, Any] = CLIP,
    repeats: int = 2 * REPEATS,
) -> dict[str, float]:
    frames = sum(v.num_frames for v in videos)
    best = _best_seconds_interleaved({"floor": lambda: _floor(videos, clip),
                                      "build": lambda: _build(videos, work / "shards_build",
                                                              clip=clip)},
                                     repeats=repeats)  # fmt: skip
    floor_s, build_s = best["floor"], best["build"]
    return {"frames": frames, "floor_fps": frames / floor_s, "build_fps": frames / build_s,
            "ratio": floor_s / build_s}  # fmt: skip


# (source frame side, image_size_max_side): the default bench; real COCO/DAVIS frames
# (~640 px) at the tiny model's size; the same frames kept large, as for a SAM2.1 run
SIZES = ((SPEC.size, CLIP["image_size_max_side"]), (640, 128), (640, 512))


def bench_sizes(work: Path) -> list[dict[str, float]]:
    """Build throughput vs floor when the source frames or the stored clips are larger:
    decoding grows with source pixels, the rest (masks, bytes written and hashed) with
    stored pixels. Each setting on its own dataset (the SPEC videos twice over)."""
    rows = []
    for size, max_side in SIZES:
        raw = work / f"sizes_{size}"
        write_coco_video(dataclasses.replace(SPEC, size=size), raw)
        grown_json(raw / "annotations.json", work / f"sizes_{size}.json", 2)
        videos = coco.load_coco_videos(work / f"sizes_{size}.json", raw)
        clip = {**CLIP, "image_size_max_side": max_side}
        result = bench_shard_build(videos, work, clip, repeats=REPEATS)
        rows.append({"size": size, "max_side": max_side, **result})
    return rows


def _sizes_table(rows: list[dict[str, float]]) -> str:
    lines = ["| source frames | stored (max side) | floor frames/s | build frames/s | ratio |",
             "|---|---|---|---|---|"]  # fmt: skip
    lines += [f"| {r['size']} px | {r['max_side']} px | {r['floor_fps']:.0f} | "
              f"{r['build_fps']:.0f} | {r['ratio']:.2f}x |" for r in rows]  # fmt: skip
    return "\n".join(lines)


def _all_clips(videos: Sequence[coco.CocoVideo], encode: bool) -> None:
    for index, video in enumerate(videos):
        clips = coco.video_clips(video, rng=shards.source_rng(0, index), **CLIP)
        for _ in shards.source_records(clips, CLIPS_PER_SHARD) if encode else clips:
            pass


def bench_breakdown(videos: Sequence[coco.CocoVideo], work: Path) -> dict[str, float]:
    """Serial (one process) seconds per frame of each step added on top of the floor."""
    frames = sum(v.num_frames for v in videos)
    floor = functools.partial(decode_and_resize, max_side=CLIP["image_size_max_side"])
    cumulative = {
        "decode + resize": _best_seconds(lambda: [floor(v) for v in videos]),
        "+ masks, clips": _best_seconds(lambda: _all_clips(videos, encode=False)),
        "+ encode": _best_seconds(lambda: _all_clips(videos, encode=True)),
        "+ tar, sha256, manifest": _best_seconds(lambda: _build(videos, work / "serial", 1)),
    }
    return {step: 1000 * seconds / frames for step, seconds in cumulative.items()}


# ---------------------------------------------------------------------------- (b) reading


def seed_item(video: coco.CocoVideo, start: int, clip_length: int, max_side: int) -> list:
    """One training item the seed project's way: PIL + pycocotools + resize, every access."""
    items = []
    for t in range(start, start + clip_length):
        height, width = video.frame_sizes[t]
        size = coco.target_size(height, width, max_side)
        with Image.open(video.frame_paths[t]) as image:
            rgb = np.asarray(image.convert("RGB"))
        masks = [rle.decode_segmentation(ann["segmentation"], height, width)
                 for _, ann in video.frame_objects[t]]  # fmt: skip
        items.append((coco.resize_frame(rgb, size), [rle.resize_mask(m, size) for m in masks]))
    return items


def _seed_items(videos: Sequence[coco.CocoVideo], names: Sequence[str]) -> list[tuple]:
    """(video, first frame) of every shard clip, from names '<video>__<start:05d>'."""
    by_name = {v.name: v for v in videos}
    return [(by_name[n.rsplit("__", 1)[0]], int(n.rsplit("__", 1)[1])) for n in names]


def _check_same_pixels(reader: shards.ShardReader, items: list[tuple]) -> None:
    """Both readers must hand out the same frames, or the comparison means nothing."""
    video, start = items[0]
    seed = seed_item(video, start, CLIP["clip_length"], CLIP["image_size_max_side"])
    if not np.array_equal(np.stack([rgb for rgb, _ in seed]), reader[0].frames):
        raise RuntimeError("seed-style reading and shards disagree on clip 0's frames")


def bench_reading(videos: Sequence[coco.CocoVideo], split: Path) -> dict[str, float]:
    with shards.ShardReader(split) as reader:
        items = _seed_items(videos, reader.names)
        _check_same_pixels(reader, items)
        shard_s = _best_seconds(lambda: [reader[i] for i in range(len(reader))])
        seed_s = _best_seconds(lambda: [
            seed_item(v, s, CLIP["clip_length"], CLIP["image_size_max_side"]) for v, s in items
        ])  # fmt: skip
    clips = len(items)
    return {"clips": clips, "seed_cps": clips / seed_s, "shard_cps": clips / shard_s,
            "ratio": seed_s / shard_s}  # fmt: skip


# ---------------------------------------------------------------------------- (c) memory


def grown_json(ann_path: Path, out_path: Path, factor: int) -> None:
    """A COCO JSON listing every video `factor` times (new ids, the same image files)."""
    data = json.loads(ann_path.read_text(encoding="utf-8"))
    images, annotations = [], []
    image_step = max(i["id"] for i in data["images"]) + 1
    ann_step = max(a["id"] for a in data["annotations"]) + 1
    video_step = max(i["video_id"] for i in data["images"]) + 1
    for copy in range(factor):
        images += [
            {**i, "id": i["id"] + copy * image_step, "video_id": i["video_id"] + copy * video_step}
            for i in data["images"]
        ]
        annotations += [{**a, "id": a["id"] + copy * ann_step,
                         "image_id": a["image_id"] + copy * image_step}
                        for a in data["annotations"]]  # fmt: skip
    grown = {**data, "images": images, "annotations": annotations}
    out_path.write_text(json.dumps(grown), encoding="utf-8")


def peak_rss_child(ann_path: Path, image_dir: Path, out_dir: Path) -> None:
    """Subprocess side: build, then print this process's and its workers' peak RSS (KiB)."""
    _build(coco.load_coco_videos(ann_path, image_dir), out_dir)
    main_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux
    worker_kib = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss  # largest worker
    print(json.dumps({"main_kib": main_kib, "worker_kib": worker_kib}))


def _peak_rss(ann_path: Path, image_dir: Path, out_dir: Path) -> dict[str, float]:
    command = [sys.executable, "-m", "bench.data", "--peak-rss-child",
               str(ann_path), str(image_dir), str(out_dir)]  # fmt: skip
    result = subprocess.run(command, check=True, capture_output=True, text=True,
                            cwd=Path(__file__).resolve().parents[1])  # fmt: skip
    usage = json.loads(result.stdout.strip().splitlines()[-1])
    main_mb, worker_mb = usage["main_kib"] / 1024, usage["worker_kib"] / 1024
    return {"main_mb": main_mb, "worker_mb": worker_mb, "total_mb": main_mb + WORKERS * worker_mb}


def bench_memory(raw: Path, grown: Path, work: Path) -> dict[str, Any]:
    small = _peak_rss(raw / "annotations.json", raw, work / "rss_1x")
    large = _peak_rss(grown, raw, work / "rss_4x")
    return {"small": small, "large": large, "ratio": large["total_mb"] / small["total_mb"]}


# ---------------------------------------------------------------------------- report


def _verdict(ratio: float, goal: float, above: bool) -> str:
    return "ok" if (ratio >= goal if above else ratio < goal) else "MISSED"


def table(build: dict, reading: dict, memory: dict) -> str:
    small, large = memory["small"], memory["large"]
    rows = [
        ("shard build throughput, frames/s (workers=2)",
         f"decode + resize only: {build['floor_fps']:.0f}", f"{build['build_fps']:.0f}",
         build["ratio"], ">= 0.8x", _verdict(build["ratio"], 0.8, True)),
        ("training clip reads, clips/s",
         f"seed (PIL + pycocotools + resize per access): {reading['seed_cps']:.1f}",
         f"ShardReader[i]: {reading['shard_cps']:.1f}", reading["ratio"], ">= 5x",
         _verdict(reading["ratio"], 5, True)),
        (f"shard build peak RSS, MB (main + {WORKERS} x worker), dataset x{GROWTH}",
         f"x1: {small['total_mb']:.0f} ({small['main_mb']:.0f} + {WORKERS} x "
         f"{small['worker_mb']:.0f})",
         f"x{GROWTH}: {large['total_mb']:.0f} ({large['main_mb']:.0f} + {WORKERS} x "
         f"{large['worker_mb']:.0f})", memory["ratio"], "< 1.5x",
         _verdict(memory["ratio"], 1.5, False)),
    ]  # fmt: skip
    lines = ["| measure | baseline | this project | ratio | goal | |",
             "|---|---|---|---|---|---|"]  # fmt: skip
    lines += [f"| {m} | {b} | {p} | {r:.2f}x | {g} | {v} |" for m, b, p, r, g, v in rows]
    return "\n".join(lines)


def _breakdown_line(breakdown: dict[str, float]) -> str:
    steps = ", ".join(f"{step} {ms:.2f}" for step, ms in breakdown.items())
    return f"Serial build, cumulative ms per frame (one process): {steps}."


def _setup_line(build: dict, reading: dict, seconds: float) -> str:
    return (
        f"Dataset: synthetic target, {SPEC.num_videos} videos x {SPEC.num_frames} frames of "
        f"{SPEC.size} px JPEG; clips {dict(CLIP)}: {reading['clips']} clips. The build-throughput "
        f"row lists these videos {GROWTH} times ({build['frames']} frames, same files) so "
        f"that starting the worker pool does not dominate. Machine: {os.cpu_count()} CPUs, "
        f"load average {os.getloadavg()[0]:.1f} at the end, Python "
        f"{platform.python_version()}. Times: best of {REPEATS} runs (build and floor: best of "
        f"{2 * REPEATS}, taken in turns); the bench took "
        f"{seconds:.0f} s. Command: `python -m bench.data` (run by `make bench`)."
    )


def write_section(path: Path, heading: str, body: str) -> None:
    """Replace (or add) the `## heading` section of a Markdown file, others kept as they are."""
    text = path.read_text(encoding="utf-8") if path.exists() else (
        "# Benchmarks\n\nRatios against baselines measured in the same run.\n\n"
        "## Data\n\n## Training\n\n(not measured yet: `python -m bench.train`)\n"
    )  # fmt: skip
    write_bytes_atomic(path, replace_section(text, heading, body).encode("utf-8"))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.data", description=__doc__)
    parser.add_argument("--peak-rss-child", nargs=3, type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--results", type=Path, default=RESULTS, help="Markdown file to update")
    args = parser.parse_args(argv)
    if args.peak_rss_child:
        peak_rss_child(*args.peak_rss_child)
        return 0
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="bench-data-") as tmp:
        work = Path(tmp)
        raw, grown = work / "raw", work / "grown.json"
        write_coco_video(SPEC, raw)
        grown_json(raw / "annotations.json", grown, GROWTH)
        videos = coco.load_coco_videos(raw / "annotations.json", raw)
        grown_videos = coco.load_coco_videos(grown, raw)
        build = bench_shard_build(grown_videos, work)
        breakdown = bench_breakdown(grown_videos, work)
        _build(videos, work / "shards")
        reading = bench_reading(videos, work / "shards")
        memory = bench_memory(raw, grown, work)
        sizes = bench_sizes(work)
    report = (
        f"{table(build, reading, memory)}\n\n{_breakdown_line(breakdown)}\n\n"
        "Build throughput against its floor by frame size (not a goal row: how the ratio "
        f"moves with the data; best of {REPEATS}, taken in turns, "
        f"{2 * SPEC.num_videos} videos x {SPEC.num_frames} frames):"
        f"\n\n{_sizes_table(sizes)}"
    )
    body = f"{_setup_line(build, reading, time.perf_counter() - started)}\n\n{report}"
    print(report)
    write_section(args.results, "Data", body)
    print(f"wrote the Data section of {args.results}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
