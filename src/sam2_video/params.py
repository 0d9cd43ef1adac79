"""params.yaml -> typed, frozen dataclasses. The only code that reads params.yaml.

Every key is declared here once, with its type, default and meaning (`sam2-video params`
prints them). Parsing goes through OmegaConf, whose YAML loader reads `1e-05` as a float
(PyYAML would give a string). Unknown keys, wrong types and out-of-range values fail
before any work, naming the key.
"""

from __future__ import annotations

import copy
import dataclasses
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from omegaconf import OmegaConf

from sam2_video.model import recipes
from sam2_video.model.recipes import MODELS, LossRecipe, PromptRecipe

PARAMS_FILE = Path("params.yaml")
AUTO = "auto"


def _f(default: Any, help: str, check: str | None = None) -> Any:
    """A field with its one-line meaning and an optional range check ('>0', '>=0', '0..1')."""
    meta = {"help": help, "check": check}
    if isinstance(default, list | tuple | dict):
        value = tuple(default) if isinstance(default, list | tuple) else default
        return field(default_factory=lambda: copy.copy(value), metadata=meta)
    return field(default=default, metadata=meta)


@dataclass(frozen=True)
class SyntheticParams:
    seed: int = _f(0, "seed of the generated dataset (data, not training)")
    train_videos: int = _f(
        56, "videos generated for the train split (shard.tune_fraction of them: tune)", ">0"
    )
    val_videos: int = _f(
        192, "videos generated for the validation split (evaluate scores them all)", ">0"
    )
    num_frames: int = _f(16, "frames per generated video", ">0")
    min_objects: int = _f(2, "fewest objects in a generated video", ">0")
    max_objects: int = _f(4, "most objects in a generated video", ">0")
    size: int = _f(128, "frame width and height in pixels", ">0")


@dataclass(frozen=True)
class FetchParams:
    source: str = _f(
        "synthetic",
        "synthetic (generated default) | coco_video | coco_images | davis | sav (SA-V layout: "
        "JPEGImages_24fps/<video>/ + <video>_manual.json) (your data in local_dir) | "
        "coco2017 (downloaded)",
    )
    checkpoint: str = _f(
        AUTO,
        "base weights: auto (the model's), tiny (shipped), sam2.1_hiera_{tiny,small,base_plus,"
        "large} (downloaded, checksum-verified), or the path of a SAM2 checkpoint file",
    )
    local_dir: str = _f(
        "data/user",
        "your dataset, read in place (a DVC dependency): train.json [+ val.json] and images, "
        "or DAVIS JPEGImages/ + Annotations/",
    )
    coco2017_split: str = _f("val", "COCO 2017 image archive to download: val or train")
    val_fraction: float = _f(
        0.2, "share of videos/images held out when there is no val split", "0..1"
    )
    synthetic: SyntheticParams = field(default_factory=SyntheticParams, metadata={"help": ""})


@dataclass(frozen=True)
class MotionParams:
    """Pseudo-video from static images (STCN/XMem/Cutie/AOT recipe)."""

    rotation: float = _f(20.0, "per-clip rotation range, +- degrees", ">=0")
    scale: tuple[float, ...] = _f([0.9, 1.1], "per-clip scale range [min, max]")
    shear: float = _f(10.0, "per-clip shear range, +- degrees", ">=0")
    translate: float = _f(0.1, "per-clip translation, fraction of the frame size", ">=0")
    frame_rotation: float = _f(5.0, "extra per-frame rotation, +- degrees", ">=0")
    frame_scale: tuple[float, ...] = _f([0.97, 1.03], "extra per-frame scale range")
    frame_shear: float = _f(2.0, "extra per-frame shear, +- degrees", ">=0")
    frame_translate: float = _f(0.03, "extra per-frame translation, fraction of the size", ">=0")
    crop_area: tuple[float, ...] = _f([1.0, 1.0], "random crop area range (1, 1: no crop)")
    brightness: float = _f(0.1, "colour jitter: brightness", ">=0")
    contrast: float = _f(0.05, "colour jitter: contrast", ">=0")
    saturation: float = _f(0.05, "colour jitter: saturation", ">=0")


@dataclass(frozen=True)
class ShardParams:
    seed: int = _f(
        0, "seed of the validation clips' objects and motion (training clips: top-level seed)"
    )
    clip_length: int | str = _f(
        AUTO, "frames per clip (clips are made when the shards are read)", ">0"
    )
    val_windows: bool = _f(
        False,
        "score validation videos as windows of clip_length frames every `stride` frames, their "
        "objects those on the window's first frame, instead of whole (DAVIS, YouTube-VOS, MOSE "
        "and SA-V score whole videos, every object)",
    )
    val_max_frames: int = _f(
        0, "frame cap of a whole validation video (its first frames; 0: no cap)", ">=0"
    )
    stride: int = _f(8, "frames between the starts of validation windows (val_windows)", ">0")
    max_objects: int = _f(3, "most objects per clip (those present on its first frame)", ">0")
    min_area: int = _f(
        16, "objects smaller than this on the first frame (pixels) are left out", ">=0"
    )
    max_side: int | str = _f(
        AUTO,
        "frames are stored with their longer side at most this (train.image_size must fit)",
        ">0",
    )
    sources_per_shard: int = _f(64, "videos or images per shard file", ">0")
    jpeg_quality: int = _f(
        90, "JPEG quality of frames that are resized (others keep their file's bytes)", ">0"
    )
    workers: int = _f(2, "parallel worker processes", ">0")
    include_crowd: bool = _f(False, "keep COCO crowd annotations as objects (static images)")
    tune_fraction: float = _f(
        0.15,
        "share of the train split's videos/images held out (the last ones, at least 1) for "
        "train-time validation (best step, early stop), so evaluate's val split never picks "
        "the model; 0: no train-time validation, the last step is the model",
        "0..1",
    )
    motion: MotionParams = field(default_factory=MotionParams, metadata={"help": ""})


@dataclass(frozen=True)
class TrainParams:
    model: str = _f(
        AUTO, "model config: auto (the top-level model's), tiny, sam2.1_hiera_*, or a YAML path"
    )
    image_size: int | str = _f(AUTO, "square model input size (multiple of 16)", ">0")
    clip_length: int | str = _f(
        AUTO,
        "frames per training clip (auto: SAM2's sampler's 8, or shard.clip_length if shorter); "
        "validation and evaluation clips have shard.clip_length frames",
        ">0",
    )
    steps: int = _f(100, "optimizer steps; 0 = evaluate the base model only", ">=0")
    batch_size: int = _f(4, "clips per step (per process)", ">0")
    grad_accum: int = _f(1, "micro-batches accumulated per optimizer step", ">0")
    trainable_modules: tuple[str, ...] = _f(
        [
            "memory_attention",
            "memory_encoder",
            "obj_ptr_proj",
            "obj_ptr_tpos_proj",
            "no_obj_ptr",
            "no_obj_embed_spatial",
            "maskmem_tpos_enc",
        ],
        "top-level modules trained: the memory modules and object-pointer projections",
    )
    lr_scale: dict[str, float] = _f(
        {}, "per-module learning-rate factors, e.g. {memory_encoder: 0.5} (others: 1)"
    )
    weight_decay: float = _f(0.01, "AdamW weight decay", ">=0")
    warmup_steps: int = _f(10, "linear warm-up steps before the cosine decay", ">=0")
    min_lr_ratio: float = _f(0.1, "final learning rate as a fraction of lr", "0..1")
    grad_clip: float = _f(1.0, "max gradient norm (0 disables clipping)", ">=0")
    prob_mask: float | str = _f(AUTO, "probability of a mask prompt on conditioning frames", "0..1")
    prob_points: float | str = _f(AUTO, "probability of point prompts", "0..1")
    prob_box: float | str = _f(AUTO, "probability of a box prompt", "0..1")
    num_pos_points: int = _f(1, "positive points per object for point prompts", ">0")
    include_center: bool = _f(False, "make the first point the object's centre")
    box_jitter: float = _f(0.1, "box sides move by up to this fraction of the box size", ">=0")
    num_correction_clicks: int | str = _f(
        AUTO, "correction clicks sampled from the error region", ">=0"
    )
    max_cond_frames: int | str = _f(AUTO, "at most 1 or 2 conditioning frames per clip", ">0")
    memory_as_predictor: bool = _f(
        True,
        "keep memory as SAM2VideoPredictor does at inference: "
        "a conditioning frame's from its upsampled low-res mask, "
        "features in bfloat16 (false: the full-res mask, float32, "
        "as SAM2's trainer)",
    )
    loss_mask: float = _f(20.0, "weight of the focal (or BCE) mask loss", ">=0")
    loss_dice: float | str = _f(
        AUTO, "weight of the dice loss (SAM2: 1; the tiny base was pretrained with 5)", ">=0"
    )
    loss_iou: float = _f(1.0, "weight of the IoU-prediction loss", ">=0")
    loss_object_score: float | str = _f(
        AUTO, "weight of the object-score loss (SAM2: 1; the tiny demo needs 10, see README)", ">=0"
    )
    loss_temporal: float = _f(0.0, "weight of the temporal-consistency loss", ">=0")
    use_focal: bool | str = _f(
        AUTO,
        "focal mask loss, SAM2's (true) or plain BCE, the tiny base's pretraining loss (false); "
        "tune a model with the loss it was trained with",
    )
    device: str = _f("auto", "auto, cpu, cuda or cuda:N")
    nproc_per_node: int = _f(1, "processes (GPUs) per node; >1 runs the stage under torchrun", ">0")
    amp: bool = _f(True, "bfloat16 autocast on GPU (ignored on CPU)")
    num_workers: int = _f(0, "DataLoader worker processes", ">=0")
    feature_cache_mb: int = _f(
        2048,
        "keep the frozen image encoder's output per clip, up to this many MB, so later "
        "epochs skip the encoder (0: encode every step, as SAM2's trainer)",
        ">=0",
    )
    checkpoint_every: int = _f(100, "steps between resumable checkpoints", ">0")
    # validation picks the best of these steps (and step 0, the base) on a few clips: a
    # pick among close steps is noise that another CPU's float rounding can flip
    val_every: int = _f(100, "steps between validations (J&F on a few tune clips)", ">0")
    val_clips: int = _f(8, "validation clips scored during training", ">0")
    early_stop_patience: int = _f(
        0, "stop after this many validations without gain (0: off)", ">=0"
    )

    def prompts(self) -> PromptRecipe:
        """How conditioning frames are prompted (prob_*, num_pos_points, ...), `auto` resolved."""
        return _recipe(PromptRecipe, self)

    def losses(self) -> LossRecipe:
        """The loss weights and kind (loss_*, use_focal), `auto` resolved."""
        return _recipe(LossRecipe, self)


@dataclass(frozen=True)
class EvaluateParams:
    prompts: tuple[str, ...] = _f(["mask", "points", "box"], "first-frame prompt types scored")
    max_clips: int = _f(0, "score at most this many val clips (0: all)", ">=0")
    device: str = _f(
        "auto", "auto (the GPU with bf16 autocast when present, else the CPU), cpu, cuda or cuda:N"
    )
    workers: int | str = _f(
        AUTO,
        "processes scoring clips on the CPU, one thread each, so the numbers do not depend "
        "on the core count (auto: the usable cores; on a GPU always 1)",
        ">0",
    )
    track_later_objects: bool = _f(
        True,
        "prompt an object absent on frame 0 on the first frame showing it and score it "
        "(vos_inference's --track_object_appearing_later_in_video); false: the DAVIS "
        "protocol, only objects on frame 0 are prompted and scored",
    )


@dataclass(frozen=True)
class RenderParams:
    num_clips: int = _f(3, "val clips rendered as GIFs", ">=0")
    fps: int = _f(4, "GIF frame rate", ">0")
    scale: int = _f(2, "pixel upscaling of the GIF panels", ">0")


@dataclass(frozen=True)
class Params:
    model: str = _f(
        "tiny",
        "tiny (the shipped demo model) or sam2.1_hiera_{tiny,small,base_plus,large}: decides "
        "every `auto` value (checkpoint, model config, image and stored frame size, recipe)",
    )
    seed: int = _f(0, "seed of training and evaluation randomness")
    lr: float = _f(1e-3, "peak learning rate of the trainable modules", ">0")
    fetch: FetchParams = field(default_factory=FetchParams, metadata={"help": ""})
    shard: ShardParams = field(default_factory=ShardParams, metadata={"help": ""})
    train: TrainParams = field(default_factory=TrainParams, metadata={"help": ""})
    evaluate: EvaluateParams = field(default_factory=EvaluateParams, metadata={"help": ""})
    render: RenderParams = field(default_factory=RenderParams, metadata={"help": ""})


@dataclass(frozen=True)
class PretrainParams:
    """pretrain/params.yaml's `pretrain` section: how the shipped tiny base is trained from
    scratch (its own pipeline, pretrain/dvc.yaml) on rendered source-domain video."""

    seed: int = _f(0, "seed of the initial weights, the rendered scenes and the prompts")
    threads: int = _f(
        1, "torch CPU threads: float rounding, hence the weights' hash, depends on it", ">0"
    )
    lr: float = _f(1e-3, "peak learning rate of each stage's one-cycle schedule", ">0")
    steps: int = _f(2000, "length of the video stage's learning-rate schedule", ">0")
    stop_at: int = _f(800, "step the video stage stops at (its schedule cut short there)", ">0")
    frames: int = _f(4, "frames per video-stage clip (the first is prompted)", ">0")
    clips: int = _f(4, "clips (or images) per step", ">0")
    max_objects: int = _f(3, "most objects prompted per clip", ">0")
    prob_mask: float = _f(
        1.0, "video batches: probability of a mask prompt on conditioning frames", "0..1"
    )
    prob_points: float = _f(0.0, "video batches: probability of a point prompt", "0..1")
    prob_box: float = _f(0.0, "video batches: probability of a box prompt", "0..1")
    num_correction_clicks: int = _f(1, "correction clicks after a point or box prompt", ">=0")
    max_cond_frames: int = _f(1, "at most this many prompted frames per clip (1 or 2)", ">0")
    memory_attention_init: float = _f(
        6.0,
        "bias given to memory cross-attention's query and key projections at init, so that "
        "(through RoPE) each position first attends to the same position in memory frames "
        "(0: PyTorch's default init)",
        ">=0",
    )
    joint_steps: int = _f(
        800,
        "steps of the joint stage (after the video stage: image batches with point or box "
        "prompts alternating with video batches, image encoder frozen; its own one-cycle)",
        ">0",
    )
    joint_restarts: int = _f(
        1,
        "times a joint stage that ends below min_source_jf (any prompt) runs again from its "
        "weights, with its own one-cycle; a seed that passes at the first end is unchanged",
        ">=0",
    )
    image_objects: int = _f(
        8,
        "objects per image in the joint stage: with three or four, the three candidate "
        "masks learn to cover every object without reading the prompt",
        ">0",
    )
    image_alike: float = _f(
        0.0,
        "fraction of the joint stage's images whose objects look alike (one shape and "
        "colour, a bar in front 3 times in 10), as look-alike instances crowd SA-1B images: "
        "the decoder learns to segment one of them from its click or box",
        "0..1",
    )
    val_every: int = _f(100, "steps between source-domain J&F reports", ">0")
    val_scenes: int = _f(8, "rendered source-domain videos scored", ">0")
    min_source_jf: float = _f(
        0.5,
        "least source-domain J&F at the end (mask; after joint also points, box), else no weights",
        "0..1",
    )

    def prompts(self) -> PromptRecipe:
        """Video batches' prompts: this section's prob_*, num_correction_clicks and
        max_cond_frames over the tiny demo's recipe."""
        return _recipe(PromptRecipe, self, recipes.TINY_PROMPTS)


def _recipe(kind: type, section: Any, base: Any = None) -> Any:
    """A `kind` recipe (recipes.PromptRecipe or LossRecipe) of the section's values of its
    fields (params keys of the same names), the fields the section lacks `base`'s."""
    names = [f.name for f in dataclasses.fields(kind) if hasattr(section, f.name)]
    values = {name: getattr(section, name) for name in names}
    if AUTO in values.values():
        raise ValueError(f"{kind.__name__} of unresolved params ({AUTO!r}): resolve() them first")
    return dataclasses.replace(base, **values) if base is not None else kind(**values)


def _auto_values(prompts: PromptRecipe, losses: LossRecipe) -> dict[str, Any]:
    """'train.<key>' -> value of the recipes' fields whose TrainParams default is `auto`."""
    defaults = {f.name: f.default for f in dataclasses.fields(TrainParams)}
    values = dataclasses.asdict(prompts) | dataclasses.asdict(losses)
    return {f"train.{k}": v for k, v in values.items() if defaults[k] == AUTO}


# What `auto` means for each model: the tiny demo's values, and where SAM2.1 differs, SAM2.1's
# own fine-tuning recipe (recipes.SAM21_MOSE_*; 1024 px, 8-frame clips). fetch.checkpoint and
# train.model follow the model's name.
RECIPES = {
    "tiny": {
        "shard.max_side": 128,
        "shard.clip_length": 16,
        "train.image_size": 128,
        "train.clip_length": 8,
        **_auto_values(recipes.TINY_PROMPTS, recipes.TINY_LOSSES),
    },
    "sam2.1": {
        "shard.max_side": 1024,
        "shard.clip_length": 8,
        "train.image_size": 1024,
        "train.clip_length": 8,
        **_auto_values(recipes.SAM21_MOSE_PROMPTS, recipes.SAM21_MOSE_LOSSES),
    },
}


CHOICES = {
    "model": MODELS,
    "fetch.source": ("synthetic", "coco_video", "coco_images", "davis", "sav", "coco2017"),
    "fetch.coco2017_split": ("val", "train"),
    "evaluate.prompts": ("mask", "points", "box"),
    "train.max_cond_frames": (1, 2),
}


def load_params(path: Path | str = PARAMS_FILE) -> Params:
    """Parse and validate the whole file (every stage checks all of it before working)."""
    written = load_raw_params(path)
    try:
        params = resolve(written)
        _check_cross_fields(params)
    except ValueError as err:
        raise ValueError(f"{path}: {err}") from None
    return params


def _read_yaml(path: Path) -> Any:
    """A params file's content as plain Python (OmegaConf's loader: `1e-05` is a float)."""
    if not path.is_file():
        raise FileNotFoundError(f"{path}: params file not found")
    return OmegaConf.to_container(OmegaConf.load(path), resolve=True)


def load_raw_params(path: Path | str = PARAMS_FILE) -> Params:
    """The file as written, each field checked, `auto` values left in (to show which values
    `auto` chose); `load_params` resolves and cross-checks them."""
    path = Path(path)
    raw = _read_yaml(path)
    if not isinstance(raw, dict):
        raise ValueError(f"{path}: expected a mapping of parameters")
    try:
        return _build(Params, raw, "")
    except ValueError as err:
        raise ValueError(f"{path}: {err}") from None


def load_pretrain_params(path: Path | str) -> PretrainParams:
    """pretrain/params.yaml, each key checked (the pretrain pipeline's own params file)."""
    path = Path(path)
    raw = _read_yaml(path)
    try:
        if not isinstance(raw, dict) or set(raw) != {"pretrain"}:
            raise ValueError("expected one section, pretrain:, holding the recipe")
        p = _build(PretrainParams, raw["pretrain"], "pretrain.")
        if abs(p.prob_mask + p.prob_points + p.prob_box - 1) > 1e-6:
            raise ValueError("pretrain.prob_mask + prob_points + prob_box must be 1")
    except ValueError as err:
        raise ValueError(f"{path}: {err}") from None
    return p


def recipe(model: str) -> dict[str, Any]:
    """What `auto` stands for under `model` ('section.key' -> value)."""
    family = "tiny" if model == "tiny" else "sam2.1"
    return {"fetch.checkpoint": model, "train.model": model, **RECIPES[family]}


def resolve(p: Params) -> Params:
    """`p` with each `auto` value replaced by the model's (RECIPES); set values are kept."""
    changes: dict[str, dict[str, Any]] = {}
    for key, value in recipe(p.model).items():
        section, name = key.split(".")
        if getattr(getattr(p, section), name) == AUTO:
            changes.setdefault(section, {})[name] = value
    if "clip_length" in changes.get("train", {}):  # `auto` never asks for more than is stored
        shard_length = changes.get("shard", {}).get("clip_length", p.shard.clip_length)
        changes["train"]["clip_length"] = min(changes["train"]["clip_length"], shard_length)
    sections = {k: dataclasses.replace(getattr(p, k), **v) for k, v in changes.items()}
    return dataclasses.replace(p, **sections)


def defaults(model: str = "tiny") -> Params:
    """Every default, `auto` resolved for `model`."""
    return resolve(Params(model=model))


def _build(cls: type, raw: dict, prefix: str) -> Any:
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(raw) - set(fields))
    if unknown:
        names = ", ".join(prefix + k for k in unknown)
        raise ValueError(f"unknown key(s) {names}; known: {', '.join(fields)}")
    hints = typing.get_type_hints(cls)
    values = {}
    for name, value in raw.items():
        key = prefix + name
        values[name] = _coerce(hints[name], value, key)
        _check_range(fields[name].metadata.get("check"), values[name], key)
        _check_choice(key, values[name])
    return cls(**values)


def _coerce(hint: Any, value: Any, key: str) -> Any:
    if dataclasses.is_dataclass(hint):
        if not isinstance(value, dict):
            raise ValueError(f"{key}: expected a section (mapping), got {value!r}")
        return _build(hint, value, key + ".")
    origin = typing.get_origin(hint)
    if origin is dict:
        if not isinstance(value, dict):
            raise ValueError(f"{key}: expected a mapping, got {value!r}")
        value_hint = typing.get_args(hint)[1]
        return {str(k): _coerce(value_hint, v, f"{key}.{k}") for k, v in value.items()}
    if origin is tuple:
        if not isinstance(value, list | tuple):
            raise ValueError(f"{key}: expected a list, got {value!r}")
        return tuple(_coerce(typing.get_args(hint)[0], v, key) for v in value)
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(hint)
        if value is None and type(None) in args:
            return None
        if value == AUTO and str in args:
            return value
        hint = next(a for a in args if a not in (type(None), str))
        if isinstance(value, str):
            raise ValueError(f"{key}: expected {hint.__name__} or {AUTO!r}, got {value!r}")
    if hint is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if hint in (int, float, bool, str) and (type(value) is not hint):
        raise ValueError(f"{key}: expected {hint.__name__}, got {value!r}")
    return value


def _check_range(check: str | None, value: Any, key: str) -> None:
    if value == AUTO:
        return
    bad = (
        (check == ">0" and not value > 0)
        or (check == ">=0" and not value >= 0)
        or (check == "0..1" and not 0 <= value <= 1)
    )
    if bad:
        raise ValueError(f"{key}: {value!r} is out of range (must be {check})")


def _check_choice(key: str, value: Any) -> None:
    allowed = CHOICES.get(key)
    items = value if isinstance(value, tuple) else (value,)
    if value == AUTO and key in recipe("tiny"):  # keys that `auto` is a value of
        return
    if allowed is not None and any(v not in allowed for v in items):
        raise ValueError(f"{key}: {value!r} is not allowed; choose from {allowed}")


def _check_shard(shard: ShardParams) -> None:
    if shard.jpeg_quality > 100:
        raise ValueError(f"shard.jpeg_quality: {shard.jpeg_quality} must be at most 100")
    m = shard.motion
    for name in ("scale", "frame_scale", "crop_area"):
        value = getattr(m, name)
        if len(value) != 2 or not 0 < value[0] <= value[1]:
            raise ValueError(
                f"shard.motion.{name}: {list(value)} must be [low, high], 0 < low <= high"
            )
    if m.crop_area[1] > 1:
        raise ValueError(f"shard.motion.crop_area: {list(m.crop_area)} must be within (0, 1]")
    limits = {
        "rotation": 180,
        "frame_rotation": 180,
        "shear": 89,
        "frame_shear": 89,
        "translate": 1,
        "frame_translate": 1,
        "brightness": 0.99,
        "contrast": 0.99,
        "saturation": 0.99,
    }
    for name, limit in limits.items():
        if not getattr(m, name) <= limit:
            raise ValueError(f"shard.motion.{name}: {getattr(m, name)} must be at most {limit}")


def shard_params_from(raw: dict) -> ShardParams:
    """The shard section as a manifest records it (to_dict), parsed and checked again."""
    params = _build(ShardParams, raw, "shard.")
    _check_shard(params)
    return params


def _check_model(p: Params) -> None:
    """The model's keys agree: no training above the stored frame size, one architecture."""
    size, side = p.train.image_size, p.shard.max_side
    if size > side:
        raise ValueError(
            f"train.image_size {size} is above shard.max_side {side} (frames would be upsampled);"
            f" set shard.max_side: auto or >= {size}, or train.image_size <= {side}"
        )
    if p.fetch.source == "synthetic" and size > p.fetch.synthetic.size:
        raise ValueError(
            f"train.image_size {size} is above fetch.synthetic.size {p.fetch.synthetic.size} "
            f"(frames would be upsampled); set fetch.synthetic.size >= {size} or use your data"
        )
    ckpt, model = p.fetch.checkpoint, p.train.model
    if ckpt in MODELS and model in MODELS and ckpt != model:
        raise ValueError(
            f"fetch.checkpoint {ckpt!r} is another architecture than train.model {model!r} "
            f"(model: {p.model}); set both to auto, or both to the same model"
        )


def _check_cross_fields(p: Params) -> None:
    _check_shard(p.shard)
    _check_model(p)
    t = p.train
    if abs(t.prob_mask + t.prob_points + t.prob_box - 1.0) > 1e-6:
        raise ValueError("train.prob_mask + train.prob_points + train.prob_box must sum to 1")
    if p.fetch.synthetic.min_objects > p.fetch.synthetic.max_objects:
        raise ValueError("fetch.synthetic.min_objects must be <= fetch.synthetic.max_objects")
    if t.clip_length > p.shard.clip_length:
        raise ValueError(
            f"train.clip_length {t.clip_length} is above shard.clip_length "
            f"{p.shard.clip_length} (shorter videos are not stored); set train.clip_length "
            f"<= {p.shard.clip_length}, or raise shard.clip_length"
        )
    if t.image_size % 16:
        raise ValueError(f"train.image_size: {t.image_size} must be a multiple of 16")
    unknown = sorted(set(t.lr_scale) - set(t.trainable_modules))
    if unknown:
        raise ValueError(f"train.lr_scale: {unknown} are not in train.trainable_modules")
    if not p.evaluate.prompts:
        raise ValueError("evaluate.prompts: list at least one prompt type")


def describe(cls: type = Params, prefix: str = "") -> list[tuple[str, str, str, str]]:
    """(key, type, default, meaning) for every leaf key, for `sam2-video params`."""
    rows = []
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        if dataclasses.is_dataclass(hints[f.name]):
            rows += describe(hints[f.name], prefix + f.name + ".")
            continue
        default = f.default if f.default is not dataclasses.MISSING else f.default_factory()
        type_name = getattr(hints[f.name], "__name__", str(hints[f.name]))
        meaning = f.metadata.get("help", "") + _auto_note(prefix + f.name, default)
        rows.append((prefix + f.name, type_name, repr(default), meaning))
    return rows


def _auto_note(key: str, default: Any) -> str:
    if default != AUTO or key not in RECIPES["tiny"]:
        return ""
    return f" (auto: tiny {RECIPES['tiny'][key]!r}, SAM2.1 {RECIPES['sam2.1'][key]!r})"


def to_dict(params: Any) -> dict:
    """Plain nested dict (tuples as lists), e.g. for manifests and params.yaml itself."""
    out = dataclasses.asdict(params)
    return _lists(out)


def _lists(obj: Any) -> Any:
    if isinstance(obj, dict):
        return {k: _lists(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_lists(v) for v in obj]
    return obj
