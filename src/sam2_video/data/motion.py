"""Static COCO images -> pseudo-video clips by synthesized motion.

The static-image pretraining recipe of STCN / XMem / Cutie (and AOT's COCO pretraining):
every frame of a clip is the same image seen through a random affine transform, so the
model must re-find each object after it rotated, scaled, sheared and moved.

Frame t of a clip is `frame_affine[t] @ clip_affine @ crop` applied to the (resized) image:
  crop          optional random crop (zoom in), drawn once per clip
  clip_affine   rotation / scale / x-shear about the centre plus a translation, once per clip
  frame_affine  the same kinds with smaller ranges, drawn independently for every frame
then per-frame colour jitter (brightness, contrast, saturation). Image and masks are warped
by the same matrix with PIL's affine transform: the image bilinear, the masks nearest. An
object warped out of view has an empty mask on that frame; translations are whole pixels
so that a pure translation is lossless.

The ranges come from the parsed `shard.motion` params section (`params.MotionParams`).
"""

from __future__ import annotations

import math

import numpy as np
from PIL import Image, ImageStat

from sam2_video.data.clips import Clip, objects_on_first_frame
from sam2_video.params import MotionParams

# Warped-in border: ImageNet's mean colour, as XMem fills its affine warps.
FILL_RGB = (124, 116, 104)
_GRAY_WEIGHTS = np.array([0.299, 0.587, 0.114], dtype=np.float32)  # ITU-R 601 luma


# ---------------------------------------------------------------------------- affine maths


def affine_matrix(
    size: tuple[int, int],
    rotation: float,
    scale: float,
    shear: float,
    translate: tuple[float, float],
) -> np.ndarray:
    """(3, 3) forward map of pixel coordinates (x, y) of an (H, W) frame.

    Rotation (degrees), scale and x-shear (degrees) act about the frame centre, then the
    frame moves by translate = (dx, dy) pixels (torchvision's RandomAffine composition).
    """
    height, width = size
    theta, phi = math.radians(rotation), math.radians(shear)
    rotate = np.array([[math.cos(theta), -math.sin(theta)], [math.sin(theta), math.cos(theta)]])
    linear = scale * rotate @ np.array([[1.0, math.tan(phi)], [0.0, 1.0]])
    centre = np.array([width / 2, height / 2])
    matrix = np.eye(3)
    matrix[:2, :2] = linear
    matrix[:2, 2] = centre + np.asarray(translate, dtype=float) - linear @ centre
    return matrix


def _invert_affine(matrix: np.ndarray) -> np.ndarray:
    """(2, 3) inverse of a (3, 3) affine; exact for identity and pure translations."""
    (a, b), (c, d) = matrix[:2, :2]
    det = a * d - b * c
    inverse_linear = np.array([[d, -b], [-c, a]]) / det
    return np.concatenate([inverse_linear, -inverse_linear @ matrix[:2, 2:3]], axis=1)


def _pil_warp(pixels: np.ndarray, matrix: np.ndarray, resample, fill=None) -> np.ndarray:
    """(H, W[, C]) uint8 through PIL's affine transform by the forward affine `matrix`."""
    height, width = pixels.shape[:2]
    data = tuple(float(v) for v in _invert_affine(matrix).reshape(-1))  # output -> input
    image = Image.fromarray(pixels).transform(
        (width, height), Image.Transform.AFFINE, data, resample, fillcolor=fill
    )
    return np.asarray(image)


def warp_masks(masks: np.ndarray, matrix: np.ndarray) -> np.ndarray:
    """(O, H, W) bool warped by the forward affine `matrix` with PIL NEAREST (the sampler of
    `warp_image`, so masks stay on their objects); outside the source is False. Eight
    objects at a time travel as the bits of one byte: one warp serves all of them."""
    count, height, width = masks.shape
    warped = np.empty_like(masks)
    for first in range(0, count, 8):
        group = masks[first : first + 8]
        bits = np.zeros((height, width), dtype=np.uint8)
        for k, mask in enumerate(group):
            bits |= mask.view(np.uint8) << k
        moved = _pil_warp(bits, matrix, Image.Resampling.NEAREST)  # (H, W), fill 0: no object
        flags = (1 << np.arange(len(group), dtype=np.uint8))[:, None, None]  # (G, 1, 1)
        warped[first : first + len(group)] = (moved[None] & flags) != 0
    return warped


def warp_image(rgb: np.ndarray, matrix: np.ndarray) -> np.ndarray:
    """(H, W, 3) uint8 warped by the forward affine `matrix` (PIL bilinear, mean-colour fill)."""
    return _pil_warp(rgb, matrix, Image.Resampling.BILINEAR, FILL_RGB)


# ---------------------------------------------------------------------------- random draws


def _draw_affine(
    rng: np.random.Generator,
    size: tuple[int, int],
    rotation: float,
    scale: tuple[float, float],
    shear: float,
    translate: float,
) -> np.ndarray:
    height, width = size
    # Whole-pixel translations (as torchvision rounds them): a pure translation stays exact.
    shift = np.round(rng.uniform(-translate, translate, 2) * np.array([width, height]))
    return affine_matrix(
        size,
        rng.uniform(-rotation, rotation),
        rng.uniform(*scale),
        rng.uniform(-shear, shear),
        (float(shift[0]), float(shift[1])),
    )


def _draw_crop(rng: np.random.Generator, size: tuple[int, int], area: tuple[float, float]):
    """(3, 3) zoom that maps a random crop (same aspect, `area` of the frame) onto the frame."""
    height, width = size
    side = math.sqrt(rng.uniform(*area))
    left, top = rng.uniform(0, 1 - side, 2) * np.array([width, height])
    return np.array([[1 / side, 0, -left / side], [0, 1 / side, -top / side], [0, 0, 1]])


def draw_frame_affines(
    motion: MotionParams, clip_length: int, size: tuple[int, int], rng: np.random.Generator
) -> list[np.ndarray]:
    """One (3, 3) forward affine per frame: frame_affine[t] @ clip_affine @ crop."""
    crop = _draw_crop(rng, size, motion.crop_area)
    clip_affine = _draw_affine(
        rng, size, motion.rotation, motion.scale, motion.shear, motion.translate
    )
    return [
        _draw_affine(
            rng,
            size,
            motion.frame_rotation,
            motion.frame_scale,
            motion.frame_shear,
            motion.frame_translate,
        )
        @ clip_affine
        @ crop
        for _ in range(clip_length)
    ]


def jitter_colours(
    rgb: np.ndarray, brightness: float, contrast: float, saturation: float
) -> np.ndarray:
    """(H, W, 3) uint8 with colour factors applied (1.0 = unchanged), torchvision's formulas:
    brightness x * b, contrast (x - mean grey) * c + mean grey, saturation (x - grey) * s +
    grey. The grey weights sum to 1, so the three fold into one colour matrix (a scale of
    the pixel plus a term of its grey), applied in one pass by PIL's matrix conversion."""
    image = Image.fromarray(rgb)
    mean_grey = float(np.dot(_GRAY_WEIGHTS, ImageStat.Stat(image).mean))  # exact channel sums
    scale = brightness * contrast
    offset = mean_grey * brightness * (1 - contrast)
    rows = (1 - saturation) * scale * np.tile(_GRAY_WEIGHTS, (3, 1)) + saturation * scale * np.eye(
        3
    )
    matrix = np.concatenate([rows, np.full((3, 1), offset)], axis=1)  # (3, 4): RGB + 1
    return np.asarray(image.convert("RGB", tuple(matrix.reshape(-1).tolist())))


def _draw_jitter(rng: np.random.Generator, motion: MotionParams) -> tuple[float, float, float]:
    brightness, contrast, saturation = (
        float(rng.uniform(1 - r, 1 + r))
        for r in (motion.brightness, motion.contrast, motion.saturation)
    )
    return brightness, contrast, saturation


# ---------------------------------------------------------------------------- clips


def pseudo_video_clip(
    name: str,
    rgb: np.ndarray,
    masks: np.ndarray,
    object_ids: tuple[int, ...],
    clip_length: int,
    max_objects: int,
    motion: MotionParams,
    rng: np.random.Generator,
) -> Clip | None:
    """A pseudo-video clip of one (h, w, 3) image and its (C, h, w) object masks.

    Frame t is the image under the t-th drawn affine (`draw_frame_affines`) with colour
    jitter. The clip's objects are those still visible on frame 0 after its warp, at most
    max_objects (drawn with `rng`); an object warped out of a later frame has an empty mask
    there. All randomness comes from `rng`. None when no object is visible on frame 0.
    """
    affines = draw_frame_affines(motion, clip_length, rgb.shape[:2], rng)
    first = warp_masks(masks, affines[0])  # (C, h, w)
    chosen = objects_on_first_frame(first[None], max_objects, rng)
    if not len(chosen):
        return None
    frames = [jitter_colours(warp_image(rgb, a), *_draw_jitter(rng, motion)) for a in affines]
    clip_masks = [first[chosen]] + [warp_masks(masks[chosen], a) for a in affines[1:]]
    return Clip(
        name,
        np.stack(frames),
        np.stack(clip_masks),  # (T, h, w, 3), (T, O, h, w)
        tuple(object_ids[i] for i in chosen),
    )
