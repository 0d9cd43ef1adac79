"""fetch: put raw data and the base checkpoint under data/raw.

Default source `synthetic` generates the target-domain dataset (train and val videos,
real JPEGs + COCO JSON) instead of downloading; the base checkpoint is the shipped tiny
model, a SAM2.1 checkpoint by name (downloaded, checksum-verified) or a local file.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from sam2_video.data import download, synthetic
from sam2_video.files import atomic_path
from sam2_video.model.build import tiny_base_weights_path
from sam2_video.params import FetchParams, load_params

RAW = Path("data/raw")


def fetch_checkpoint(name: str, out: Path) -> None:
    if name == "tiny":
        with atomic_path(out) as tmp:
            shutil.copyfile(tiny_base_weights_path(), tmp)
        return
    path = download.fetch_checkpoint(name, out.parent / "downloads")
    with atomic_path(out) as tmp:
        shutil.copyfile(path, tmp)


def fetch_synthetic(p: FetchParams, out: Path) -> None:
    s = p.synthetic
    for split, videos, seed in (
        ("train", s.train_videos, s.seed),
        ("val", s.val_videos, s.seed + 1),
    ):
        spec = synthetic.SyntheticSpec("target", videos, s.num_frames,
                                       (s.min_objects, s.max_objects), s.size, seed)  # fmt: skip
        summary = synthetic.write_coco_video(spec, out / split)
        print(f"fetch: generated {split}: {summary}")


def main() -> None:
    params = load_params().fetch
    with atomic_path(RAW) as tmp:
        fetch_synthetic(params, tmp)
        fetch_checkpoint(params.checkpoint, tmp / "base_checkpoint.pt")
    print(f"fetch: wrote {RAW}")


if __name__ == "__main__":
    main()
