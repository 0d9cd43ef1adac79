"""Score base and fine-tuned models on the fixed validation clips, for every prompt type."""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from sam2_video.evaluate import metrics, uncertainty
from sam2_video.evaluate.predict import predict_clip
from sam2_video.model import build
from sam2_video.params import AUTO, EvaluateParams


def load_model(config_path: Path, checkpoint: Path, device: torch.device | str = "cpu"):
    """The model of a config file with a checkpoint's weights, in eval mode on `device`;
    built from the config as written (SAM2's VOS evaluation: no postprocessing)."""
    cfg = build.load_model_config(str(config_path))
    model = build.build_model(cfg)
    build.load_checkpoint(model, checkpoint)
    return model.to(device).eval(), int(cfg.model.image_size)


def evaluation_workers(workers: int | str, device: torch.device | str) -> int:
    """Processes that score clips: one on a GPU; `auto` on the CPU: the usable cores."""
    if torch.device(device).type != "cpu":
        return 1
    return len(os.sched_getaffinity(0)) if workers == AUTO else int(workers)


def score_models(
    models: dict, clips, p: EvaluateParams, image_size: int, device="cpu", on_prediction=None
) -> dict:
    """{model: {prompt: [per-clip score dicts]}}; on_prediction(model, prompt, clip, masks).

    Predictions are non-overlapping (one object a pixel), the form a DAVIS palette PNG
    stores, so `sam2-video score` on the written PNGs gives these numbers exactly.
    On the CPU each clip is scored by one thread, in `evaluate.workers` processes: a clip's
    numbers are then the same whatever the core count or the number of processes.
    """
    job = _ClipJob(models, tuple(p.prompts), image_size, str(device), p.track_later_objects)
    workers = min(evaluation_workers(p.workers, device), max(len(clips), 1))
    scores = {m: {prompt: [] for prompt in p.prompts} for m in models}
    with _clip_results(job, clips, workers) as results:
        for clip, result in zip(
            clips, tqdm(results, total=len(clips), desc="evaluate"), strict=True
        ):
            for (name, prompt), (clip_scores, packed) in result.items():
                scores[name][prompt].append(clip_scores)
                if on_prediction is not None:
                    pred = np.unpackbits(packed, count=clip.masks.size).reshape(clip.masks.shape)
                    on_prediction(name, prompt, clip, pred.astype(bool))
    return scores


class _ClipJob:
    """Scores one clip with every model and prompt; picklable, so worker processes get it
    once (the models' weights travel with it)."""

    def __init__(self, models, prompts, image_size, device, track_later_objects):
        self.models, self.prompts, self.image_size = models, prompts, image_size
        self.device, self.track_later_objects = device, track_later_objects

    def __call__(self, clip) -> dict:
        out = {}
        scored = scored_objects(clip.masks, self.track_later_objects)
        with _single_thread(self.device):
            for name, model in self.models.items():
                for prompt in self.prompts:
                    pred = predict_clip(
                        model, clip, prompt, self.image_size, self.device, self.track_later_objects
                    )
                    clip_scores = metrics.score_clip(clip.masks[:, scored], pred[:, scored])
                    out[name, prompt] = (clip_scores, np.packbits(pred))
        return out


def scored_objects(masks: np.ndarray, track_later_objects: bool) -> np.ndarray:
    """Indices of the objects of (T, O, H, W) masks that are scored: all of them, or in the
    DAVIS protocol (no later objects tracked) those on frame 0."""
    if track_later_objects:
        return np.arange(masks.shape[1])
    return np.flatnonzero(masks[0].reshape(masks.shape[1], -1).any(axis=1))


@contextlib.contextmanager
def _single_thread(device: str):
    if torch.device(device).type != "cpu":
        yield
        return
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


_WORKER_JOB: _ClipJob | None = None


def _init_worker(job: _ClipJob) -> None:
    global _WORKER_JOB
    _WORKER_JOB = job


def _run_in_worker(clip) -> dict:
    return _WORKER_JOB(clip)


@contextlib.contextmanager
def _clip_results(job: _ClipJob, clips, workers: int):
    """Results of `job` on each clip, in clip order: in this process, or in `workers`
    spawned ones (fork is unsafe once torch's thread pools exist)."""
    if workers <= 1:
        yield map(job, clips)
        return
    ctx = torch.multiprocessing.get_context("spawn")
    with ctx.Pool(workers, initializer=_init_worker, initargs=(job,)) as pool:
        yield pool.imap(_run_in_worker, clips)


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
