"""Score base and fine-tuned models on the fixed validation clips, for every prompt type."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from sam2_video.evaluate import metrics, uncertainty
from sam2_video.evaluate.predict import predict_clip
from sam2_video.model import build
from sam2_video.params import EvaluateParams


def load_model(config_path: Path, checkpoint: Path, device: torch.device | str = "cpu"):
    """The model of a config file with a checkpoint's weights, in eval mode on `device`;
    built from the config as written (SAM2's VOS evaluation: no postprocessing)."""
    cfg = build.load_model_config(str(config_path))
    model = build.build_model(cfg)
    build.load_checkpoint(model, checkpoint)
    return model.to(device).eval(), int(cfg.model.image_size)


def score_models(
    models: dict, clips, p: EvaluateParams, image_size: int, device="cpu", on_prediction=None
) -> dict:
    """{model: {prompt: [per-clip score dicts]}}; on_prediction(model, prompt, clip, masks).

    Predictions are non-overlapping (one object a pixel), the form a DAVIS palette PNG
    stores, so `sam2-video score` on the written PNGs gives these numbers exactly.
    """
    scores = {m: {prompt: [] for prompt in p.prompts} for m in models}
    for clip in tqdm(clips, desc="evaluate", mininterval=5):
        for name, model in models.items():
            for prompt in p.prompts:
                pred = predict_clip(model, clip, prompt, image_size, device, p.track_later_objects)
                scores[name][prompt].append(metrics.score_clip(clip.masks, pred))
                if on_prediction is not None:
                    on_prediction(name, prompt, clip, pred)
    return scores


def headline_metrics(scores: dict, prompts) -> dict[str, float]:
    """Flat names for `dvc exp show`.

    `jf`, `j`, `f`, `dice` (fine-tuned) and their `_base` twins are scored with the first
    prompt type of evaluate.prompts — by default the first-frame mask, the DAVIS-2017
    semi-supervised protocol; `jf_gain` is their difference. Means are over all objects of
    all clips (DAVIS-2017). The first prompt type also gets the toolkit's recall and decay
    (`j_recall`, `j_decay`, `f_recall`, `f_decay`, and `_base` twins). Every prompt type
    gets `jf_<prompt>`, `jf_base_<prompt>` and `jf_gain_<prompt>`, with the gain's 95 %
    interval `jf_gain_<prompt>_lo` .. `jf_gain_<prompt>_hi` (bootstrap paired over videos).
    """
    out: dict[str, float] = {}
    for model, suffix in (("finetuned", ""), ("base", "_base")):
        per_prompt = {p: metrics.summarize(scores[model][p]) for p in prompts}
        for key in metrics.SUMMARY_KEYS:
            out[f"{key}{suffix}"] = per_prompt[prompts[0]][key]
        for p in prompts:
            out[f"jf{suffix}_{p}"] = per_prompt[p]["jf"]
    out["jf_gain"] = out["jf"] - out["jf_base"]
    for p in prompts:
        out[f"jf_gain_{p}"] = out[f"jf_{p}"] - out[f"jf_base_{p}"]
        gain = gain_interval(scores, p)
        out[f"jf_gain_{p}_lo"], out[f"jf_gain_{p}_hi"] = gain.low, gain.high
    return {k: round(v, 4) for k, v in sorted(out.items())}


def gain_interval(scores: dict, prompt: str) -> uncertainty.Interval:
    """The fine-tuned model's J&F minus the base's, per object, with its interval."""
    per_video = {m: [clip["jf"] for clip in scores[m][prompt]] for m in ("finetuned", "base")}
    return uncertainty.paired_difference([per_video["finetuned"]], [per_video["base"]])


def per_object_rows(scores: dict, clip_names: list[str]) -> list[dict]:
    """One row per (prompt, clip, object): base and fine-tuned J&F, what `sam2-video
    compare` pairs across experiments."""
    rows = []
    for prompt in scores["base"]:
        for i, name in enumerate(clip_names):
            base, tuned = scores["base"][prompt][i]["jf"], scores["finetuned"][prompt][i]["jf"]
            for o, (b, t) in enumerate(zip(base, tuned, strict=True)):
                row = {"prompt": prompt, "clip": name, "object": o}
                rows.append(row | {"jf_base": float(b), "jf": float(t)})
    return rows


def per_clip_rows(scores: dict, clips_names: list[str], prompt: str) -> list[dict]:
    """One row per clip (base vs fine-tuned J&F) for a DVC bar plot."""
    rows = []
    for i, name in enumerate(clips_names):
        base = float(np.mean(scores["base"][prompt][i]["jf"]))
        tuned = float(np.mean(scores["finetuned"][prompt][i]["jf"]))
        rows.append({"clip": name, "jf_base": round(base, 4), "jf": round(tuned, 4)})
    return rows
