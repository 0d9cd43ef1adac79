"""The shard build's floor, in a module of its own: a floor worker process imports only what
decoding and resizing need (numpy, PIL), not the benchmark's own imports, so that its
start-up costs no more than a shard worker's."""

from __future__ import annotations

from sam2_video.data.sources.coco_video import CocoVideo
from sam2_video.data.sources.frames import read_rgb, resize_frame, target_size


def decode_frames(video: CocoVideo, max_side: int) -> int:
    """The floor's unit of work: every frame of a video decoded and resized, nothing else."""
    for path, size in zip(video.frame_paths, video.frame_sizes, strict=True):
        resize_frame(read_rgb(path, size), target_size(*size, max_side))
    return video.num_frames
