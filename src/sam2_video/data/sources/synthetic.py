"""The embedded default dataset: synthetic video written to disk in COCO format.

Two domains mirror the real job (SAM2.1 trained on generic video, tuned to a user's video):
- `source`: distinct-looking objects (own shape and colour each) that jitter about a slow
  drift; appearance alone identifies an object, and it stays near where it was seen, so a
  base pretrained here tracks by appearance and searches near its memory.
- `target`: look-alike objects (one shape and colour per video) that travel fast and
  straight (about 3.5 times the source's net drift per frame), bounce off the frame's
  edges, cross and go behind an occluder; only where an object *was*, and where it was
  heading (what the memory holds), tells the look-alikes apart. The base falls behind them:
  that gap is what fine-tuning the memory closes. Objects stay in the frame (centres within
  15-85 % of it), so what is left to learn is identity, not drawing half-seen shapes.

`write_coco_video` writes real JPEG frames and a COCO JSON whose masks are compressed RLE,
uncompressed RLE or polygons, so the default run takes exactly the code path of real data.
Masks are rasterised by pycocotools itself, so the annotation *is* the ground truth.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image
from pycocotools import mask as mask_utils

from sam2_video.files import atomic_path


@dataclass(frozen=True)
class Domain:
    alike: bool  # one shape and colour for all objects of a video
    speed: tuple[float, float]  # pixels per frame, as a fraction of the frame size
    jitter: float  # random per-frame jump, fraction of the frame size (erratic motion)
    occluder_prob: float


DOMAINS = {
    "source": Domain(alike=False, speed=(0.0, 0.02), jitter=0.03, occluder_prob=0.0),
    "target": Domain(alike=True, speed=(0.035, 0.055), jitter=0.0, occluder_prob=0.3),
}

SHAPES = ("ellipse", "rectangle", "triangle", "diamond")


@dataclass(frozen=True)
class Scene:
    frames: np.ndarray  # (T, H, W, 3) uint8
    polygons: list[list[list[float] | None]]  # [T][O] full outline, or None if off-frame
    visible: np.ndarray  # (T, O, H, W) bool, after occlusion and frame clipping


def _outline(shape: str, cx: float, cy: float, r: float, angle: float) -> np.ndarray:
    """(K, 2) polygon vertices (x, y) of a shape of radius r, rotated by angle."""
    if shape == "ellipse":
        t = np.linspace(0, 2 * np.pi, 20, endpoint=False)
        pts = np.stack([np.cos(t), 0.65 * np.sin(t)], 1)
    elif shape == "rectangle":
        pts = np.array([[-1, -0.6], [1, -0.6], [1, 0.6], [-1, 0.6]], float)
    elif shape == "triangle":
        pts = np.array([[0, -1], [0.95, 0.75], [-0.95, 0.75]], float)
    else:
        pts = np.array([[0, -1], [0.7, 0], [0, 1], [-0.7, 0]], float)
    rot = np.array([[math.cos(angle), -math.sin(angle)], [math.sin(angle), math.cos(angle)]])
    return pts @ rot.T * r + np.array([cx, cy])


def rasterize(poly: np.ndarray, h: int, w: int) -> np.ndarray:
    """(H, W) bool mask of a polygon, rasterised exactly as pycocotools decodes it."""
    rle = mask_utils.frPyObjects([poly.reshape(-1).tolist()], h, w)
    return mask_utils.decode(mask_utils.merge(rle)).astype(bool)


def _background(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    c0, c1 = rng.uniform(40, 215, size=(2, 3))
    ramp = (
        np.linspace(0, 1, w)[None, :, None]
        if rng.random() < 0.5
        else np.linspace(0, 1, h)[:, None, None]
    )
    img = c0 + (c1 - c0) * ramp + rng.normal(0, 6, size=(h, w, 3))
    return np.broadcast_to(img, (h, w, 3)).astype(np.float32)


def _hue_colour(hue: float) -> np.ndarray:
    """A saturated RGB colour (0..255) for a hue in [0, 1)."""
    return 255 * np.clip(np.abs((hue * 6 + np.array([0, 4, 2])) % 6 - 3) - 1, 0, 1)


def _object_styles(rng: np.random.Generator, n: int, alike: bool):
    """Per object: (shape, RGB colour, radius as a fraction of the frame).

    Both domains draw shapes, colours and sizes from the same distributions, so a model
    that segments one segments the other; only whether objects of a video differ changes.
    """
    shapes = rng.permutation(len(SHAPES))
    base_hue = rng.uniform(0, 1)
    styles = []
    for i in range(n):
        hue = base_hue if alike else (base_hue + i / n) % 1.0
        shape = SHAPES[shapes[0] if alike else shapes[i % len(SHAPES)]]
        radius = 0.11 * rng.uniform(0.95, 1.05) if alike else rng.uniform(0.08, 0.14)
        styles.append((shape, _hue_colour(hue), radius))
    return styles


def _trajectories(rng, n: int, t: int, size: int, domain: Domain) -> np.ndarray:
    """(T, O, 2) centres; smooth bouncing motion plus optional erratic jumps."""
    margin = 0.15 * size
    lo, hi = margin, size - margin
    pos = rng.uniform(0.2 * size, 0.8 * size, size=(n, 2))
    speed = rng.uniform(*domain.speed, size=(n, 1)) * size
    ang = rng.uniform(0, 2 * np.pi, size=n)
    vel = speed * np.stack([np.cos(ang), np.sin(ang)], 1)
    out = np.zeros((t, n, 2))
    for f in range(t):
        out[f] = pos + rng.normal(0, domain.jitter * size, size=pos.shape)
        pos = pos + vel
        bounce = (pos < lo) | (pos > hi)
        vel = np.where(bounce, -vel, vel)
        pos = np.clip(pos, lo, hi)
    return out


def render_scene(
    rng: np.random.Generator, domain: Domain, num_frames: int, num_objects: int, size: int
) -> Scene:
    """Render one video: later objects are drawn in front of earlier ones."""
    bg = _background(rng, size, size)
    styles = _object_styles(rng, num_objects, domain.alike)
    centres = _trajectories(rng, num_objects, num_frames, size, domain)
    spin = rng.uniform(-0.08, 0.08, size=num_objects)
    angle0 = rng.uniform(0, 2 * np.pi, size=num_objects)
    occluder = _occluder(rng, domain, num_frames, size)
    frames = np.zeros((num_frames, size, size, 3), np.uint8)
    visible = np.zeros((num_frames, num_objects, size, size), bool)
    polygons: list[list[list[float] | None]] = []
    for f in range(num_frames):
        img, covered, polys = bg.copy(), np.zeros((size, size), bool), []
        full = []
        for o, (shape, color, radius) in enumerate(styles):
            poly = _outline(shape, *centres[f, o], radius * size, angle0[o] + spin[o] * f)
            mask = rasterize(poly, size, size)
            shade = 0.85 + 0.15 * np.linspace(0, 1, size)[None, :, None]
            img[mask] = (color * shade + rng.normal(0, 5, (size, size, 3)))[mask]
            full.append(mask)
            polys.append(poly.reshape(-1).tolist() if mask.any() else None)
        if occluder is not None:
            x0, x1 = occluder[f]
            img[:, x0:x1] = np.array([90.0, 90.0, 90.0])
            covered[:, x0:x1] = True
        for o in range(num_objects):
            in_front = np.any(full[o + 1 :], axis=0) if o + 1 < num_objects else False
            visible[f, o] = full[o] & ~in_front & ~covered
        frames[f] = np.clip(img, 0, 255).astype(np.uint8)
        polygons.append(polys)
    return Scene(frames=frames, polygons=polygons, visible=visible)


def _occluder(rng, domain: Domain, t: int, size: int) -> np.ndarray | None:
    """(T, 2) column range of a vertical bar that drifts across the frame, or None."""
    if rng.random() >= domain.occluder_prob:
        return None
    width = int(size * rng.uniform(0.08, 0.14))
    start = rng.uniform(0, size - width)
    drift = rng.uniform(-0.01, 0.01) * size
    x0 = np.clip(start + drift * np.arange(t), 0, size - width).astype(int)
    return np.stack([x0, x0 + width], 1)


@dataclass(frozen=True)
class SyntheticSpec:
    domain: str
    num_videos: int
    num_frames: int
    objects_per_video: tuple[int, int]
    size: int
    seed: int


def _segmentation(scene: Scene, f: int, o: int, style_index: int) -> dict | list:
    """COCO segmentation of object o on frame f, varying the encoding as real data does.

    A fully visible object is stored as its polygon; an occluded or clipped one as RLE
    (compressed, or uncompressed for every third object).
    """
    mask = scene.visible[f, o]
    poly = scene.polygons[f][o]
    h, w = mask.shape
    if poly is not None and np.array_equal(mask, rasterize(np.asarray(poly), h, w)):
        return [[round(v, 2) for v in poly]] if _round_trips(poly, mask) else _rle(mask, True)
    return _rle(mask, style_index % 3 != 2)


def _round_trips(poly: list[float], mask: np.ndarray) -> bool:
    rounded = np.asarray([round(v, 2) for v in poly])
    return np.array_equal(rasterize(rounded, *mask.shape), mask)


def _rle(mask: np.ndarray, compressed: bool) -> dict:
    if compressed:
        rle = mask_utils.encode(np.asfortranarray(mask.astype(np.uint8)))
        return {"size": list(rle["size"]), "counts": rle["counts"].decode("ascii")}
    flat = mask.T.reshape(-1)  # column-major, as COCO's RLE
    changes = np.flatnonzero(np.diff(flat.astype(np.int8))) + 1
    bounds = np.concatenate([[0], changes, [flat.size]])
    counts = np.diff(bounds).tolist()
    if flat[0]:
        counts = [0, *counts]
    return {"size": list(mask.shape), "counts": counts}


def write_coco_video(spec: SyntheticSpec, out_dir: Path) -> dict:
    """Generate `spec` into out_dir/{annotations.json, frames/…}; returns a summary."""
    domain = DOMAINS[spec.domain]
    with atomic_path(out_dir) as tmp:
        images, annotations = [], []
        rng = np.random.default_rng(spec.seed)
        for v in range(spec.num_videos):
            n_obj = int(rng.integers(spec.objects_per_video[0], spec.objects_per_video[1] + 1))
            scene = render_scene(rng, domain, spec.num_frames, n_obj, spec.size)
            _write_video(tmp, v, scene, images, annotations)
        coco = {
            "info": {"description": f"synthetic {spec.domain} video, seed {spec.seed}"},
            "images": images,
            "annotations": annotations,
            "categories": [{"id": 1, "name": "shape", "supercategory": "shape"}],
            "videos": [{"id": v, "name": f"video{v:04d}"} for v in range(spec.num_videos)],
        }
        (tmp / "annotations.json").write_text(json.dumps(coco), encoding="utf-8")
    return {"videos": spec.num_videos, "images": len(images), "annotations": len(annotations)}


def _write_video(root: Path, v: int, scene: Scene, images: list, annotations: list) -> None:
    t, o = scene.visible.shape[:2]
    (root / "frames" / f"video{v:04d}").mkdir(parents=True)
    for f in range(t):
        image_id = len(images) + 1
        name = f"frames/video{v:04d}/{f:05d}.jpg"
        Image.fromarray(scene.frames[f]).save(root / name, quality=92)
        h, w = scene.frames.shape[1:3]
        images.append(
            {
                "id": image_id,
                "file_name": name,
                "height": h,
                "width": w,
                "video_id": v,
                "order_in_video": f,
            }
        )
        for obj in range(o):
            area = int(scene.visible[f, obj].sum())
            if area == 0:
                continue
            annotations.append(
                {
                    "id": len(annotations) + 1,
                    "image_id": image_id,
                    "category_id": 1,
                    "track_id": v * 100 + obj + 1,
                    "iscrowd": 0,
                    "area": area,
                    "bbox": _bbox(scene.visible[f, obj]),
                    "segmentation": _segmentation(scene, f, obj, obj),
                }
            )


def _bbox(mask: np.ndarray) -> list[int]:
    ys, xs = np.nonzero(mask)
    return [
        int(xs.min()),
        int(ys.min()),
        int(xs.max() - xs.min() + 1),
        int(ys.max() - ys.min() + 1),
    ]
