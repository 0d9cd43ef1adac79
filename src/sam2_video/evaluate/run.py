"""Score base and fine-tuned models on the fixed validation clips, for every prompt type."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from tqdm import tqdm

from sam2_video.data import davis
from sam2_video.evaluate import metrics
from sam2_video.evaluate.predict import predict_clip
from sam2_video.model import build


def load_model(config_path: Path, checkpoint: Path):
    cfg = build.load_model_config(str(config_path))
    model = build.build_model(cfg)
    build.load_checkpoint(model, checkpoint)
    return model.eval(), int(cfg.model.image_size)


def as_index_maps(masks: np.ndarray) -> np.ndarray:
    """(T, O, H, W) -> the same, made non-overlapping as a DAVIS palette PNG stores them.

    Predictions are scored in the form they are written (one object a pixel, later object
    wins), so `sam2-video score` on the written PNGs gives evaluate's numbers exactly.
    """
    maps = np.stack([davis.masks_to_index_map(frame) for frame in masks])  # (T, H, W)
    return davis.index_maps_to_masks(maps, range(1, masks.shape[1] + 1))


def score_models(models: dict, clips, prompts, image_size: int, on_prediction=None) -> dict:
    """{model: {prompt: [per-clip score dicts]}}; on_prediction(model, prompt, clip, masks)."""
    scores = {m: {p: [] for p in prompts} for m in models}
    for clip in tqdm(clips, desc="evaluate", mininterval=5):
        for name, model in models.items():
            for prompt in prompts:
                pred = as_index_maps(predict_clip(model, clip, prompt, image_size))
                scores[name][prompt].append(metrics.score_clip(clip.masks, pred))
                if on_prediction is not None:
                    on_prediction(name, prompt, clip, pred)
    return scores


def headline_metrics(scores: dict, prompts) -> dict[str, float]:
    """Flat names for `dvc exp show`.

    `jf`, `j`, `f`, `dice` (fine-tuned) and their `_base` twins are scored with the first
    prompt type of evaluate.prompts — by default the first-frame mask, the DAVIS-2017
    semi-supervised protocol; `jf_gain` is their difference. Every prompt type also gets
    `jf_<prompt>`, `jf_base_<prompt>` and `jf_gain_<prompt>`.
    """
    out: dict[str, float] = {}
    for model, suffix in (("finetuned", ""), ("base", "_base")):
        per_prompt = {p: metrics.summarize(scores[model][p]) for p in prompts}
        for key in metrics.METRIC_KEYS:
            out[f"{key}{suffix}"] = per_prompt[prompts[0]][key]
        for p in prompts:
            out[f"jf{suffix}_{p}"] = per_prompt[p]["jf"]
    out["jf_gain"] = out["jf"] - out["jf_base"]
    for p in prompts:
        out[f"jf_gain_{p}"] = out[f"jf_{p}"] - out[f"jf_base_{p}"]
    return {k: round(v, 4) for k, v in sorted(out.items())}


def per_clip_rows(scores: dict, clips_names: list[str], prompt: str) -> list[dict]:
    """One row per clip (base vs fine-tuned J&F) for a DVC bar plot."""
    rows = []
    for i, name in enumerate(clips_names):
        base = float(np.mean(scores["base"][prompt][i]["jf"]))
        tuned = float(np.mean(scores["finetuned"][prompt][i]["jf"]))
        rows.append({"clip": name, "jf_base": round(base, 4), "jf": round(tuned, 4)})
    return rows
