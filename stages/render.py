"""render: GIFs of ground truth | base | fine-tuned for the first val clips (DVC image plots)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from sam2_video.data.davis import read_davis_annotations
from sam2_video.data.shards import ShardReader
from sam2_video.errors import run_stage
from sam2_video.files import atomic_path
from sam2_video.params import load_params
from sam2_video.render import comparison_frames, write_gif

SHARDS, PREDICTIONS, OUT = (
    Path("data/shards/val"),
    Path("data/eval/predictions"),
    Path("plots/gifs"),
)


def predicted(model: str, clip_name: str, num_objects: int):
    masks, indices, _ = read_davis_annotations(PREDICTIONS / model / "Annotations" / clip_name)
    t, _, h, w = masks.shape
    full = np.zeros((t, num_objects, h, w), dtype=bool)  # objects by palette index
    for col, index in enumerate(indices):
        full[:, index - 1] = masks[:, col]
    return full


def main() -> None:
    p = load_params().render
    reader = ShardReader(SHARDS)
    with atomic_path(OUT) as tmp:
        tmp.mkdir()
        for i in range(min(p.num_clips, len(reader))):
            clip = reader[i]
            panels = [clip.masks] + [
                predicted(m, clip.name, clip.num_objects) for m in ("base", "finetuned")
            ]
            write_gif(
                comparison_frames(clip.frames, panels, p.scale), tmp / f"{clip.name}.gif", p.fps
            )
    print(f"render: wrote {min(p.num_clips, len(reader))} GIFs to {OUT}")


if __name__ == "__main__":
    run_stage("render", main)
