"""`python -m bench.data`: the data pipeline against baselines measured in the same run.

  (a) shard bytes / source bytes, stored at source size: static images and video;
  (b) training clips/s at SAM2.1's shape: 8 frames stored at 1024 px from 1280x720 JPEGs,
      3 objects, 2 loader worker processes; video windows and pseudo-video;
  (c) training clips/s at the default 128 px against the seed project's per-access loader
      (PIL + pycocotools + resize on every access), the same windows;
  (d) peak RSS of the shard build when the dataset grows 4x, each build in its own
      subprocess so the numbers are that build's alone;
  (e) build throughput against its floor (decoding the same JPEGs, nothing else, with the
      same worker count): a figure, not a goal.
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
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image
from pycocotools import mask as mask_utils

from bench.floor import decode_frames
from bench.markdown import replace_section
from sam2_video.data import shards
from sam2_video.data.sources import coco_images, coco_video
from sam2_video.data.sources.frames import resize_frame, target_size
from sam2_video.data.sources.masks import decode_segmentation, resize_mask
from sam2_video.data.sources.synthetic import SyntheticSpec, write_coco_video
from sam2_video.files import write_bytes_atomic
from sam2_video.params import ShardParams

RESULTS = Path(__file__).with_name("RESULTS.md")
SPEC = SyntheticSpec(
    "target", num_videos=24, num_frames=16, objects_per_video=(2, 4), size=128, seed=0
)
DEFAULT = ShardParams(clip_length=8, stride=4, max_side=128, workers=2)  # the default's shape
SAM21 = dataclasses.replace(DEFAULT, max_side=1024)
SOURCE_SIZE = dataclasses.replace(DEFAULT, max_side=100_000)  # nothing resized
LARGE = (720, 1280)  # (H, W) of the SAM2.1-shape source JPEGs
REPEATS = 3
GROWTH = 4
LOADER_WORKERS = 2


def _best_seconds(runs: dict[str, Callable[[], Any]], repeats: int = REPEATS) -> dict:
    """Fastest of `repeats` wall-clock runs of each, taken in turns (a, b, a, b, ...) so that
    a slow spell of the machine hits both sides of a ratio, not just one."""
    times: dict[str, list[float]] = {name: [] for name in runs}
    for _ in range(repeats):
        for name, run in runs.items():
            start = time.perf_counter()
            run()
            times[name].append(time.perf_counter() - start)
    return {name: min(t) for name, t in times.items()}


# ---------------------------------------------------------------------------- data


def _photo(rng: np.random.Generator, size: tuple[int, int]) -> np.ndarray:
    """(H, W, 3) uint8 that compresses about like a photo: smooth shading, shapes, grain."""
    height, width = size
    yy, xx = np.mgrid[:height, :width].astype(np.float32) / max(height, width)
    rgb = np.stack([np.sin(5 * xx + c) + np.cos(4 * yy - 2 * c) for c in range(3)], -1)
    for _ in range(8):
        cy, cx, r = rng.uniform(0, 1, 3) * [1, width / height, 0.3]
        rgb[(yy - cy * height / max(size)) ** 2 + (xx - cx * height / max(size)) ** 2 < r * r] += (
            rng.uniform(-1, 1, 3)
        )
    rgb += rng.normal(0, 0.02, rgb.shape).astype(np.float32)
    return np.clip((rgb + 2) * 60, 0, 255).astype(np.uint8)


def _objects(t: int, size: tuple[int, int]) -> list[np.ndarray]:
    """Three objects of frame t (boxes and a disc moving across the frame)."""
    height, width = size
    yy, xx = np.mgrid[:height, :width]
    shift = 6 * t
    return [
        (abs(yy - height // 3) < height // 8) & (abs(xx - width // 4 - shift) < width // 10),
        (yy - height // 2) ** 2 + (xx - width // 2 + shift) ** 2 < (height // 6) ** 2,
        (abs(yy - 2 * height // 3) < height // 10) & (abs(xx - 3 * width // 4) < width // 12),
    ]


def write_large_videos(root: Path, videos: int, frames: int, size=LARGE) -> Path:
    """`videos` x `frames` JPEGs (quality 90) of `size` with 3 objects each (COCO RLE)."""
    rng = np.random.default_rng(0)
    images, anns = [], []
    for v in range(videos):
        for t in range(frames):
            name = f"v{v}/{t:05d}.jpg"
            (root / name).parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(_photo(rng, size)).save(root / name, quality=90)
            images.append(
                {
                    "id": len(images) + 1,
                    "file_name": name,
                    "height": size[0],
                    "width": size[1],
                    "video_id": v,
                    "order_in_video": t,
                }
            )
            for k, mask in enumerate(_objects(t, size)):
                rle = mask_utils.encode(np.asfortranarray(mask, dtype=np.uint8))
                anns.append(
                    {
                        "id": len(anns) + 1,
                        "image_id": images[-1]["id"],
                        "category_id": 1,
                        "track_id": k + 1,
                        "iscrowd": 0,
                        "segmentation": {"size": list(size), "counts": rle["counts"].decode()},
                    }
                )
    coco = {"images": images, "annotations": anns, "categories": [{"id": 1, "name": "x"}]}
    (root / "annotations.json").write_text(json.dumps(coco), encoding="utf-8")
    return root / "annotations.json"


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
        annotations += [
            {**a, "id": a["id"] + copy * ann_step, "image_id": a["image_id"] + copy * image_step}
            for a in data["annotations"]
        ]
    grown = {**data, "images": images, "annotations": annotations}
    out_path.write_text(json.dumps(grown), encoding="utf-8")


# ---------------------------------------------------------------------------- (a) bytes


def bench_bytes(ann_path: Path, image_dir: Path, work: Path) -> dict[str, float]:
    """Shard bytes over source file bytes, everything stored at source size."""
    ratios = {}
    for kind, load in (
        ("video", coco_video.load_coco_videos),
        ("images", coco_images.load_coco_images),
    ):
        manifest = shards.build_split(load(ann_path, image_dir), work / kind, SOURCE_SIZE)
        ratios[kind] = manifest["total_bytes"] / manifest["source_bytes"]
        ratios[f"{kind}_mb"] = manifest["source_bytes"] / 2**20
    return ratios


# ---------------------------------------------------------------------------- (b, c) reading


class _Draws:
    """Item k: a training clip of source k % num_sources (generator of k), as tensors (the
    DataLoader hands tensors back through shared memory, as the training batches)."""

    def __init__(self, reader: shards.ShardReader, count: int) -> None:
        self.reader, self.count = reader, count

    def __len__(self) -> int:
        return self.count

    def __getitem__(self, k: int) -> tuple:
        import torch

        clip = self.reader.training_clip(k % self.reader.num_sources, np.random.default_rng(k))
        return torch.from_numpy(clip.frames), torch.from_numpy(clip.masks)


def clips_per_second(reader: shards.ShardReader, count: int) -> float:
    import torch  # here only: the build's RSS children must not carry torch

    loader = torch.utils.data.DataLoader(
        _Draws(reader, count), batch_size=None, num_workers=LOADER_WORKERS
    )
    start = time.perf_counter()
    for _ in loader:
        pass
    return count / (time.perf_counter() - start)


def batches_per_second(reader: shards.ShardReader, count: int) -> float:
    """Training batches of one clip as fit.py gets them: model input (1024 px, normalised
    float) and masks at model size made in the workers, handed over through shared memory."""
    import torch

    from sam2_video.data.loader import StepBatches

    batches = StepBatches(reader, 1, SAM21.max_side, seed=0, steps=count)
    loader = torch.utils.data.DataLoader(batches, batch_size=None, num_workers=LOADER_WORKERS)
    start = time.perf_counter()
    for _ in loader:
        pass
    return count / (time.perf_counter() - start)


def bench_sam21_reading(ann_path: Path, image_dir: Path, work: Path) -> dict[str, float]:
    videos = coco_video.load_coco_videos(ann_path, image_dir)
    images = coco_images.load_coco_images(ann_path, image_dir)
    found = {}
    for kind, sources, count in (("video", videos, 120), ("images", images, 40)):
        with shards.ShardReader(_built(sources, work / f"sam21_{kind}", SAM21)) as reader:
            found[kind] = max(clips_per_second(reader, count) for _ in range(REPEATS))
            if kind == "video":
                found["batches"] = max(batches_per_second(reader, 24) for _ in range(REPEATS))
    return found


def _built(sources: Sequence, out: Path, p: ShardParams) -> Path:
    shards.build_split(sources, out, p)
    return out


def seed_item(video: coco_video.CocoVideo, start: int, clip_length: int, max_side: int) -> list:
    """One training item the seed project's way: PIL + pycocotools + resize, every access."""
    items = []
    for t in range(start, start + clip_length):
        height, width = video.frame_sizes[t]
        size = target_size(height, width, max_side)
        with Image.open(video.frame_paths[t]) as image:
            rgb = np.asarray(image.convert("RGB"))
        masks = [
            decode_segmentation(ann["segmentation"], height, width)
            for _, ann in video.frame_objects[t]
        ]
        items.append((resize_frame(rgb, size), [resize_mask(m, size) for m in masks]))
    return items


def bench_default_reading(videos: Sequence[coco_video.CocoVideo], work: Path) -> dict:
    """The fixed windows read from shards vs the same windows read the seed's way."""
    by_name = {v.name: v for v in videos}
    with shards.ShardReader(_built(videos, work / "default", DEFAULT)) as reader:
        items = [(by_name[n.rsplit("__", 1)[0]], int(n.rsplit("__", 1)[1])) for n in reader.names]
        first = seed_item(*items[0], DEFAULT.clip_length, DEFAULT.max_side)
        difference = np.abs(np.stack([rgb for rgb, _ in first]) - reader[0].frames.astype(int))
        if difference.mean() > 2:  # the stored frames are JPEGs re-encoded at 128 px
            raise RuntimeError("seed-style reading and shards disagree on clip 0's frames")
        seconds = _best_seconds(
            {
                "shards": lambda: [reader[i] for i in range(len(reader))],
                "seed": lambda: [
                    seed_item(v, s, DEFAULT.clip_length, DEFAULT.max_side) for v, s in items
                ],
            }
        )
    clips = len(items)
    return {
        "clips": clips,
        "seed_cps": clips / seconds["seed"],
        "shard_cps": clips / seconds["shards"],
        "ratio": seconds["seed"] / seconds["shards"],
    }


# ---------------------------------------------------------------------------- (d) memory


def peak_rss_child(ann_path: Path, image_dir: Path, out_dir: Path) -> None:
    """Subprocess side: build, then print this process's and its workers' peak RSS (KiB)."""
    shards.build_split(coco_video.load_coco_videos(ann_path, image_dir), out_dir, SAM21)
    main_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux
    worker_kib = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss  # largest worker
    print(json.dumps({"main_kib": main_kib, "worker_kib": worker_kib}))


def _peak_rss(ann_path: Path, image_dir: Path, out_dir: Path) -> dict[str, float]:
    command = [
        sys.executable,
        "-m",
        "bench.data",
        "--peak-rss-child",
        str(ann_path),
        str(image_dir),
        str(out_dir),
    ]
    result = subprocess.run(
        command, check=True, capture_output=True, text=True, cwd=Path(__file__).resolve().parents[1]
    )
    usage = json.loads(result.stdout.strip().splitlines()[-1])
    main_mb, worker_mb = usage["main_kib"] / 1024, usage["worker_kib"] / 1024
    workers = SAM21.workers
    return {"main_mb": main_mb, "worker_mb": worker_mb, "total_mb": main_mb + workers * worker_mb}


def bench_memory(ann_path: Path, grown: Path, image_dir: Path, work: Path) -> dict[str, Any]:
    small = _peak_rss(ann_path, image_dir, work / "rss_1x")
    large = _peak_rss(grown, image_dir, work / "rss_4x")
    return {"small": small, "large": large, "ratio": large["total_mb"] / small["total_mb"]}


# ---------------------------------------------------------------------------- (e) throughput


def _floor(videos: Sequence[coco_video.CocoVideo], p: ShardParams) -> int:
    context = multiprocessing.get_context("spawn")  # as build_split's pool
    work = functools.partial(decode_frames, max_side=p.max_side)
    with ProcessPoolExecutor(p.workers, mp_context=context) as pool:
        return sum(pool.map(work, videos))


def bench_build(videos: Sequence[coco_video.CocoVideo], work: Path) -> dict[str, float]:
    frames = sum(v.num_frames for v in videos)
    best = _best_seconds(
        {
            "floor": lambda: _floor(videos, SAM21),
            "build": lambda: shards.build_split(videos, work / "throughput", SAM21),
        }
    )
    return {
        "frames": frames,
        "floor_fps": frames / best["floor"],
        "build_fps": frames / best["build"],
        "ratio": best["floor"] / best["build"],
    }


# ---------------------------------------------------------------------------- report


def _verdict(ok: bool) -> str:
    return "ok" if ok else "MISSED"


def table(sizes: dict, sam21: dict, default: dict, memory: dict, build: dict) -> str:
    small, large = memory["small"], memory["large"]
    rows = [
        (
            "shard bytes / source bytes, static images at source size",
            "source JPEGs: 1.00",
            f"{sizes['images']:.3f}",
            f"{sizes['images']:.2f}x",
            "<= 1.3x",
            _verdict(sizes["images"] <= 1.3),
        ),
        (
            "same, video frames at source size",
            "source JPEGs: 1.00",
            f"{sizes['video']:.3f}",
            f"{sizes['video']:.2f}x",
            "<= 1.3x",
            _verdict(sizes["video"] <= 1.3),
        ),
        (
            f"training clips/s, SAM2.1 shape, {LOADER_WORKERS} workers: video windows",
            "-",
            f"{sam21['video']:.1f}",
            "-",
            ">= 30",
            _verdict(sam21["video"] >= 30),
        ),
        (
            "same: pseudo-video (static images)",
            "-",
            f"{sam21['images']:.1f}",
            "-",
            ">= 8",
            _verdict(sam21["images"] >= 8),
        ),
        (
            "same, video windows as fit.py's batches (1024 px model input made in the workers)",
            "-",
            f"{sam21['batches']:.1f}",
            "-",
            "(figure)",
            "",
        ),
        (
            "clips/s at the default 128 px (one process)",
            f"seed (PIL + pycocotools + resize per access): {default['seed_cps']:.1f}",
            f"{default['shard_cps']:.1f}",
            f"{default['ratio']:.2f}x",
            ">= 5x",
            _verdict(default["ratio"] >= 5),
        ),
        (
            f"shard build peak RSS, MB (main + {SAM21.workers} x worker), dataset x{GROWTH}",
            f"x1: {small['total_mb']:.0f} ({small['main_mb']:.0f} + {SAM21.workers} x "
            f"{small['worker_mb']:.0f})",
            f"x{GROWTH}: {large['total_mb']:.0f} ({large['main_mb']:.0f} + {SAM21.workers} x "
            f"{large['worker_mb']:.0f})",
            f"{memory['ratio']:.2f}x",
            "< 1.5x",
            _verdict(memory["ratio"] < 1.5),
        ),
        (
            f"shard build, frames/s ({SAM21.workers} workers, 1280x720 -> 1024 px)",
            f"decode + resize only: {build['floor_fps']:.1f}",
            f"{build['build_fps']:.1f}",
            f"{build['ratio']:.2f}x",
            "(figure)",
            "",
        ),
    ]
    lines = ["| measure | baseline | this project | ratio | goal | |", "|---|---|---|---|---|---|"]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


def _setup_line(sizes: dict, videos: int, frames: int, seconds: float) -> str:
    return (
        f"Data: bytes rows on {videos} videos x {frames} frames of {LARGE[1]}x{LARGE[0]} "
        f"photo-like JPEGs (quality 90, {sizes['video_mb']:.1f} MB; the same files read as "
        f"static images); SAM2.1 rows on those frames stored at {SAM21.max_side} px, clips of "
        f"{SAM21.clip_length} frames, 3 objects, clips drawn in {LOADER_WORKERS} DataLoader "
        f"worker processes (frames and masks decoded, motion for pseudo-video; the model-input "
        f"resize is not included); the 128 px row on the synthetic target "
        f"({SPEC.num_videos} videos x {SPEC.num_frames} frames of {SPEC.size} px, windows of "
        f"{DEFAULT.clip_length} every {DEFAULT.stride}); memory and throughput on the "
        f"{LARGE[1]}x{LARGE[0]} videos (x{GROWTH}: listed {GROWTH} times). Machine: "
        f"{os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f} at the end, Python "
        f"{platform.python_version()}. Times: best of {REPEATS}; the bench took {seconds:.0f} s. "
        "Command: `python -m bench.data` (run by `make bench`)."
    )


def write_section(path: Path, heading: str, body: str) -> None:
    """Replace (or add) the `## heading` section of a Markdown file, others kept as they are."""
    text = (
        path.read_text(encoding="utf-8")
        if path.exists()
        else (
            "# Benchmarks\n\nRatios against baselines measured in the same run.\n\n"
            "## Data\n\n## Training\n\n(not measured yet: `python -m bench.train`)\n"
        )
    )
    write_bytes_atomic(path, replace_section(text, heading, body).encode("utf-8"))


def run(work: Path) -> tuple[dict, ...]:
    videos, frames = 4, 12
    ann_path = write_large_videos(work / "large", videos, frames)
    grown = work / "grown.json"
    grown_json(ann_path, grown, GROWTH)
    write_coco_video(SPEC, work / "small")
    small = coco_video.load_coco_videos(work / "small" / "annotations.json", work / "small")
    sizes = bench_bytes(ann_path, work / "large", work / "bytes")
    sam21 = bench_sam21_reading(ann_path, work / "large", work)
    default = bench_default_reading(small, work)
    memory = bench_memory(ann_path, grown, work / "large", work)
    build = bench_build(coco_video.load_coco_videos(ann_path, work / "large"), work)
    return sizes, sam21, default, memory, build, videos, frames


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
        sizes, sam21, default, memory, build, videos, frames = run(Path(tmp))
    report = table(sizes, sam21, default, memory, build)
    setup = _setup_line(sizes, videos, frames, time.perf_counter() - started)
    print(report)
    write_section(args.results, "Data", f"{setup}\n\n{report}")
    print(f"wrote the Data section of {args.results}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
