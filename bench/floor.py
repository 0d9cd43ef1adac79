"""The shard build's floor, in a module of its own: a floor worker process imports only what
decoding and resizing need (`sam2_video.data.coco`: numpy, PIL), not the benchmark's own
imports, so that its start-up costs no more than a lean shard worker's. (Its pool also
gets the shard workers' allocator setting, `shards.reuse_freed_memory`: see bench/data.py.)"""

from __future__ import annotations

from sam2_video.data import coco


def decode_and_resize(video: coco.CocoVideo, max_side: int) -> int:
    """The floor's unit of work: every frame of a video decoded and resized, nothing else."""
    for path, size in zip(video.frame_paths, video.frame_sizes, strict=True):
        coco.resize_frame(coco.read_rgb(path, size), coco.target_size(*size, max_side))
    return video.num_frames
