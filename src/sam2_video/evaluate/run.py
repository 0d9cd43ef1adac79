"""Score base and fine-tuned models on the fixed validation clips, for every prompt type."""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from sam2_video.evaluate import diagnose, metrics, uncertainty
from sam2_video.evaluate.predict import object_prompts, predict_all, share_encoder
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

    `clips`: a sequence of Clips read by index (a ShardReader reads them lazily), so one
    clip at a time is held here and in each worker. Predictions are non-overlapping (one
    object a pixel), the form a DAVIS palette PNG stores, so `sam2-video score` on the
    written PNGs gives these numbers exactly. A clip's score dicts also hold its objects'
    `width` at the model's input (diagnose.object_widths). On the CPU each clip is scored
    by one thread, in `evaluate.workers` processes: a clip's numbers are then the same
    whatever the core count or the number of processes.
    """
    job = _ClipJob(models, clips, tuple(p.prompts), image_size, str(device), p.track_later_objects)
    workers = min(evaluation_workers(p.workers, device), max(len(clips), 1))
    scores = {m: {prompt: [] for prompt in p.prompts} for m in models}
    with _clip_results(job, len(clips), workers) as results:
        progress = tqdm(results, total=len(clips), desc="evaluate", mininterval=5)
        for i, result in enumerate(progress):
            clip = clips[i] if on_prediction is not None else None
            for (name, prompt), (clip_scores, packed, shape) in result.items():
                scores[name][prompt].append(clip_scores)
                if clip is not None:
                    pred = np.unpackbits(packed, count=int(np.prod(shape))).reshape(shape)
                    on_prediction(name, prompt, clip, pred.astype(bool))
    return scores


class _ClipJob:
    """Scores clip i with every model and prompt; picklable, so worker processes get it
    once (the models' weights and the clip reader travel with it)."""

    def __init__(self, models, clips, prompts, image_size, device, track_later_objects):
        self.models, self.clips, self.prompts = models, clips, prompts
        self.image_size, self.device = image_size, device
        self.track_later_objects = track_later_objects
        # the models do not change between clips: compare their encoders' weights once
        self.shared_encoder = len(models) > 1 and share_encoder(list(models.values()))

    def __call__(self, index: int) -> dict:
        clip, out = self.clips[index], {}
        scored = scored_objects(clip.masks, self.track_later_objects)
        widths = diagnose.object_widths(clip.masks[:, scored], self.image_size)
        prompts = object_prompts(clip.masks, self.track_later_objects)
        with _single_thread(self.device):
            preds = predict_all(
                self.models,
                clip.frames,
                prompts,
                self.prompts,
                self.image_size,
                self.device,
                self.shared_encoder,
            )
        for key, pred in preds.items():  # models x prompts, in that order
            clip_scores = metrics.score_clip(clip.masks[:, scored], pred[:, scored])
            clip_scores["width"] = widths
            out[key] = (clip_scores, np.packbits(pred), pred.shape)
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


def _run_in_worker(index: int) -> dict:
    return _WORKER_JOB(index)


@contextlib.contextmanager
def _clip_results(job: _ClipJob, count: int, workers: int):
    """Results of `job` on clips 0..count-1, in order: in this process, or in `workers`
    spawned ones (fork is unsafe once torch's thread pools exist)."""
    if workers <= 1:
        yield map(job, range(count))
        return
    ctx = torch.multiprocessing.get_context("spawn")
    with ctx.Pool(workers, initializer=_init_worker, initargs=(job,)) as pool:
        yield pool.imap(_run_in_worker, range(count))


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
