"""sam2-video-training: fine-tune SAM2's memory modules on COCO-format video clips."""

__version__ = "0.1.0"
