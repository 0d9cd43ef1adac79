"""fetch: put the data source's description and the base checkpoint under data/raw.

- synthetic: generate the target-domain dataset (train and val videos, JPEGs + COCO JSON);
- coco_video / coco_images / davis / sav: your dataset in fetch.local_dir, read in place (the
  folder is a DVC dependency, so editing it re-runs fetch and shard);
- coco2017: download and verify the official archives (cached in data/downloads).
Writes data/raw/source.json (what shard reads) and data/raw/base_checkpoint.pt: the
shipped tiny base, a SAM2.1 checkpoint downloaded by name (checksum-verified), or a file.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from sam2_video.data import download
from sam2_video.data.sources import sav, synthetic
from sam2_video.errors import run_stage
from sam2_video.files import atomic_path, write_json_atomic
from sam2_video.model import build
from sam2_video.model.recipes import MODELS, SAM21_MODELS
from sam2_video.params import FetchParams, Params, load_params

RAW, DOWNLOADS = Path("data/raw"), Path("data/downloads")
# download.SAM2_CHECKPOINTS names them by size: the part after "sam2.1_hiera_"
SAM21_REGISTRY = {name: name.removeprefix("sam2.1_hiera_") for name in SAM21_MODELS}


def check_checkpoint(p: Params) -> None:
    """Before any work: a checkpoint file must exist and be of train.model's architecture."""
    name = p.fetch.checkpoint
    if name in MODELS:
        return  # named weights: params checked that they match train.model
    if not Path(name).is_file():
        raise FileNotFoundError(
            f"fetch.checkpoint: {name!r} is neither auto, 'tiny', one of "
            f"{sorted(SAM21_REGISTRY)}, nor an existing file; fix the path in params.yaml"
        )
    cfg = build.load_model_config(p.train.model, p.train.image_size)
    fix = (
        f"set fetch.checkpoint to a {p.train.model} checkpoint, or model (or train.model) "
        "to the checkpoint's architecture"
    )
    build.check_checkpoint(cfg, name, f"params.yaml fetch.checkpoint: {fix}")


def fetch_checkpoint(name: str, out: Path) -> None:
    if name == "tiny":
        source = build.tiny_base_weights_path()
    elif name in SAM21_REGISTRY:
        source = download.fetch_checkpoint(SAM21_REGISTRY[name], DOWNLOADS)
    else:
        source = Path(name)
    try:  # a hard link avoids copying a large checkpoint; copy across file systems
        os.link(source, out)
    except OSError:
        shutil.copyfile(source, out)


def fetch_synthetic(p: FetchParams, out: Path) -> dict:
    s = p.synthetic
    splits = {}
    for split, videos, seed in (
        ("train", s.train_videos, s.seed),
        ("val", s.val_videos, s.seed + 1),
    ):
        spec = synthetic.SyntheticSpec(
            "target", videos, s.num_frames, (s.min_objects, s.max_objects), s.size, seed
        )
        print(f"fetch: generated {split}: {synthetic.write_coco_video(spec, out / split)}")
        splits[split] = {
            "annotations": str(RAW / split / "annotations.json"),
            "images": str(RAW / split),
        }
    return {"kind": "coco_video", "splits": splits}


def local_coco(p: FetchParams) -> dict:
    root = Path(p.local_dir)
    if not (root / "train.json").is_file():
        raise FileNotFoundError(
            f"fetch.local_dir: {root / 'train.json'} not found; put your COCO JSON there "
            "(and optionally val.json), with image file_names relative to that folder"
        )
    splits = {"train": {"annotations": str(root / "train.json"), "images": str(root)}}
    if (root / "val.json").is_file():
        splits["val"] = {"annotations": str(root / "val.json"), "images": str(root)}
    return {"kind": p.source, "splits": splits, "val_fraction": p.val_fraction}


def local_davis(p: FetchParams) -> dict:
    root = Path(p.local_dir)
    for sub in ("JPEGImages", "Annotations"):
        if not (root / sub).is_dir():
            raise FileNotFoundError(f"fetch.local_dir: {root / sub} not found (DAVIS layout)")
    return {"kind": "davis", "root": str(root), "val_fraction": p.val_fraction}


def local_sav(p: FetchParams) -> dict:
    """SA-V layout (SAM2's training data): JPEGImages_24fps/<video>/ + <video>_manual.json."""
    root = Path(p.local_dir)
    sav.frame_root(root)  # FileNotFoundError naming the layout when it is not there
    return {"kind": "sav", "root": str(root), "val_fraction": p.val_fraction}


def coco2017(p: FetchParams, out: Path) -> dict:
    target = out / "coco2017"
    for part in ("annotations", p.coco2017_split):
        archive = download.fetch_file(download.COCO2017[part], DOWNLOADS)
        download.extract_archive(archive, target)
    split = f"{p.coco2017_split}2017"
    train = {
        "annotations": str(RAW / "coco2017/annotations" / f"instances_{split}.json"),
        "images": str(RAW / "coco2017" / split),
    }
    return {"kind": "coco_images", "splits": {"train": train}, "val_fraction": p.val_fraction}


def main() -> None:
    params = load_params()
    check_checkpoint(params)
    p = params.fetch
    with atomic_path(RAW) as tmp:
        tmp.mkdir()
        if p.source == "synthetic":
            source = fetch_synthetic(p, tmp)
        elif p.source == "coco2017":
            source = coco2017(p, tmp)
        elif p.source == "davis":
            source = local_davis(p)
        elif p.source == "sav":
            source = local_sav(p)
        else:
            source = local_coco(p)
        write_json_atomic(tmp / "source.json", source)
        fetch_checkpoint(p.checkpoint, tmp / "base_checkpoint.pt")
    print(f"fetch: wrote {RAW} ({p.source}, checkpoint {p.checkpoint})")


if __name__ == "__main__":
    run_stage("fetch", main)
