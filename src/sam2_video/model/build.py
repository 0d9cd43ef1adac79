"""Build SAM2 models from the sam2 package's Hydra configs or the project's tiny config.

One model config file -> one SAM2Base. Checkpoints are SAM2's own format
(`{"model": state_dict}`), loaded strictly and with `weights_only=True`.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from importlib import resources
from pathlib import Path
from typing import Any

import torch
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from sam2_video.files import atomic_path
from sam2_video.model.recipes import MODELS, SAM21_MODELS

# Names accepted by `train.model` (recipes.MODELS): the project's tiny model and SAM2.1's
# four sizes, each with the sam2 package's config file
SAM21_CONFIGS = dict(
    zip(
        SAM21_MODELS,
        (f"configs/sam2.1/sam2.1_hiera_{size}.yaml" for size in ("t", "s", "b+", "l")),
        strict=True,
    )
)
MODEL_NAMES = MODELS
TINY_BASE_WEIGHTS = "tiny_base.pt"
VIDEO_PREDICTOR_TARGET = "sam2.sam2_video_predictor.SAM2VideoPredictor"


def model_config_path(name: str) -> Path:
    """The YAML file behind a model name (or the path itself, if it is a file)."""
    if name == "tiny":
        return Path(str(resources.files("sam2_video.model") / "configs" / "tiny.yaml"))
    if name in SAM21_CONFIGS:
        return Path(str(resources.files("sam2") / SAM21_CONFIGS[name]))
    if Path(name).is_file():
        return Path(name)
    raise ValueError(
        f"train.model: unknown model {name!r}; use auto, one of {MODEL_NAMES} or a YAML path"
    )


def tiny_base_weights_path() -> Path:
    return Path(str(resources.files("sam2_video.model") / "weights" / TINY_BASE_WEIGHTS))


def load_model_config(name: str, image_size: int | None = None) -> DictConfig:
    """Model config with optional resolution override, kept consistent across modules.

    SAM2's RoPE attention bakes the feature-map size (image_size / 16) into its config, so
    a resolution change must reach the memory-attention layers too.
    """
    cfg = OmegaConf.load(model_config_path(name))
    if "model" not in cfg:
        raise ValueError(f"{model_config_path(name)}: a SAM2 model config needs a 'model' key")
    cfg = OmegaConf.create({"model": cfg.model})  # drop training-only sections
    if image_size is not None:
        if image_size % 16:
            raise ValueError(f"model.image_size must be a multiple of 16, got {image_size}")
        cfg.model.image_size = image_size
        side = image_size // 16
        layer = cfg.model.memory_attention.layer
        layer.self_attention.feat_sizes = [side, side]
        layer.cross_attention.feat_sizes = [side, side]
    return cfg


def build_model(cfg: DictConfig | Mapping[str, Any], target: str | None = None) -> torch.nn.Module:
    """Instantiate `cfg.model` (a SAM2Base unless `target` overrides the class)."""
    cfg = OmegaConf.create(OmegaConf.to_container(OmegaConf.create(cfg), resolve=True))
    if target is not None:
        cfg.model._target_ = target
    return instantiate(cfg.model, _recursive_=True)


def read_checkpoint(path: Path | str) -> dict[str, torch.Tensor]:
    """The state dict of a SAM2-format checkpoint file (`{"model": state_dict}`)."""
    try:
        state = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except FileNotFoundError:
        raise FileNotFoundError(f"{path}: checkpoint file not found") from None
    except (RuntimeError, EOFError, OSError) as err:  # torch's message for a non-zip/pickle file
        raise ValueError(f"{path}: not a readable PyTorch checkpoint ({err})") from None
    if not isinstance(state, dict) or not isinstance(state.get("model"), dict):
        raise ValueError(f"{path}: not a SAM2 checkpoint (expected a dict with key 'model')")
    return state["model"]


def mismatch(model: torch.nn.Module, weights: Mapping[str, torch.Tensor]) -> str:
    """'' when `weights` fit `model` exactly (names and shapes), else what differs."""
    own = model.state_dict()
    missing = sorted(set(own) - set(weights))
    unexpected = sorted(set(weights) - set(own))
    shapes = sorted(k for k in set(own) & set(weights) if own[k].shape != weights[k].shape)
    parts = [
        f"{len(keys)} {what} (e.g. {keys[0]})"
        for what, keys in (
            ("missing", missing),
            ("unexpected", unexpected),
            ("of another shape", shapes),
        )
        if keys
    ]
    return ", ".join(parts)


def check_checkpoint(cfg: DictConfig, path: Path | str, fix: str) -> None:
    """Fail, naming the file, when the checkpoint is not of `cfg`'s architecture.

    (The meta device would save building real weights, but SAM2's Hiera calls .item().)
    """
    weights = read_checkpoint(path)
    model = build_model(cfg)
    differs = mismatch(model, weights)
    if differs:
        raise ValueError(f"{path}: checkpoint of another architecture ({differs}); {fix}")


def load_checkpoint(model: torch.nn.Module, path: Path | str) -> None:
    """Strict load of a SAM2-format checkpoint; names the file and the mismatching keys."""
    weights = read_checkpoint(path)
    differs = mismatch(model, weights)
    if differs:
        raise ValueError(f"{path}: checkpoint does not match the model config ({differs})")
    model.load_state_dict(weights)


def save_checkpoint(model: torch.nn.Module, path: Path | str) -> None:
    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    with atomic_path(path) as tmp:
        torch.save({"model": state}, tmp)


def save_model_config(cfg: DictConfig, path: Path | str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(OmegaConf.to_yaml(cfg), encoding="utf-8")


def set_trainable(model: torch.nn.Module, trainable_modules: Iterable[str]) -> None:
    """Freeze everything except the named top-level submodules / parameters."""
    names = tuple(trainable_modules)
    top_level = {n.split(".")[0] for n, _ in model.named_parameters()}
    unknown = [n for n in names if n not in top_level]
    if unknown:
        raise ValueError(
            f"train.trainable_modules: unknown {unknown}; the model has {sorted(top_level)}"
        )
    for param_name, param in model.named_parameters():
        param.requires_grad_(param_name.split(".")[0] in names)


def parameter_summary(model: torch.nn.Module) -> dict[str, tuple[int, int]]:
    """Per top-level module: (total parameters, trainable parameters)."""
    summary: dict[str, list[int]] = {}
    for name, param in model.named_parameters():
        row = summary.setdefault(name.split(".")[0], [0, 0])
        row[0] += param.numel()
        row[1] += param.numel() if param.requires_grad else 0
    return {k: (v[0], v[1]) for k, v in sorted(summary.items())}


def pick_device(name: str, local_rank: int = 0) -> torch.device:
    """`auto`: this process's GPU when CUDA is present, else the CPU; otherwise the name."""
    if name == "auto":
        name = f"cuda:{local_rank}" if torch.cuda.is_available() else "cpu"
    return torch.device(name)


def rank_device(name: str, local_rank: int = 0, world: int = 1) -> torch.device:
    """This process's device: `pick_device`'s, except that under torchrun (world > 1) any
    CUDA name (`cuda`, `cuda:0`, ...) means the process's own GPU, cuda:LOCAL_RANK."""
    device = pick_device(name, local_rank)
    if device.type == "cuda" and world > 1:
        return torch.device("cuda", local_rank)
    return device


def check_gpu_count(name: str, nproc_per_node: int) -> None:
    """Refuse `train.nproc_per_node` processes on CUDA when fewer GPUs are visible."""
    if pick_device(name).type != "cuda":
        return
    visible = torch.cuda.device_count()
    if nproc_per_node > visible:
        raise ValueError(
            f"params.yaml: train.nproc_per_node {nproc_per_node} is more than the {visible} "
            f"GPU(s) visible for train.device {name}; set train.nproc_per_node <= {visible}, "
            "make more GPUs visible (CUDA_VISIBLE_DEVICES) or set train.device cpu"
        )
