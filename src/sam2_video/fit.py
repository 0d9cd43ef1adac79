"""The train loop, top to bottom: fine-tune SAM2's memory modules on clip shards.

Reads like nanoGPT's train.py: settings in one frozen dataclass, then model, optimizer,
schedule, resume, and the loop (forward over clips -> loss -> backward -> clip -> step),
with validation, checkpoints and DVCLive logging at intervals. Works on CPU or GPU, in one
process or under torchrun (DDP; gloo on CPU, nccl on GPU).
"""

from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from tqdm import tqdm

from sam2_video.data.loader import Batch, StepBatches
from sam2_video.evaluate import metrics
from sam2_video.evaluate.predict import predict_clip
from sam2_video.files import atomic_path, sha256_bytes
from sam2_video.model import build, losses, rollout


@dataclass(frozen=True)
class FitSettings:
    steps: int
    lr: float
    batch_size: int
    grad_accum: int
    weight_decay: float
    warmup_steps: int
    min_lr_ratio: float
    grad_clip: float
    image_size: int
    seed: int
    prompts: rollout.PromptConfig
    loss_weights: losses.LossWeights
    amp: bool
    num_workers: int
    checkpoint_every: int
    val_every: int
    val_clips: int
    early_stop_patience: int

    def fingerprint(self, extra: str = "") -> str:
        """Identifies a run: a checkpoint of other settings or inputs is never resumed."""
        return sha256_bytes((repr(asdict(self)) + extra).encode())[:16]


class ClipForward(torch.nn.Module):
    """Wraps SAM2 so that DDP sees one forward: the video rollout plus its loss."""

    def __init__(self, sam: torch.nn.Module, settings: FitSettings):
        super().__init__()
        self.sam, self.settings = sam, settings

    def forward(self, batch: Batch, plan: rollout.Plan, gen: torch.Generator):
        s = self.settings
        frames = rollout.track(self.sam, batch.images, batch.gt, batch.obj_to_clip, plan,
                               s.prompts, gen)  # fmt: skip
        return losses.clip_losses(frames, batch.gt, s.loss_weights)


def lr_factor(step: int, settings: FitSettings) -> float:
    """Linear warm-up, then cosine decay to min_lr_ratio (multiplies the peak lr)."""
    if step < settings.warmup_steps:
        return (step + 1) / settings.warmup_steps
    span = max(settings.steps - settings.warmup_steps, 1)
    progress = min((step - settings.warmup_steps) / span, 1.0)
    cosine = 0.5 * (1 + math.cos(math.pi * progress))
    return settings.min_lr_ratio + (1 - settings.min_lr_ratio) * cosine


def step_generator(seed: int, step: int, rank: int) -> torch.Generator:
    """Prompt randomness of one step: a function of (seed, step, rank), so resumes match."""
    state = np.random.SeedSequence([seed, step, rank]).generate_state(2, dtype=np.uint32)
    return torch.Generator().manual_seed(int(state[0]) << 32 | int(state[1]))


def trainable_state(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {n: p.detach().cpu().clone() for n, p in model.named_parameters() if p.requires_grad}


def validate(model, val_reader, settings: FitSettings, device) -> float:
    """Mean J&F (mask prompt on frame 0) on the first `val_clips` validation clips."""
    per_clip = []
    for i in range(min(settings.val_clips, len(val_reader))):
        clip = val_reader[i]
        pred = predict_clip(model, clip, "mask", settings.image_size, device)
        per_clip.append(metrics.score_clip(clip.masks, pred))
    model.train()
    return metrics.summarize(per_clip)["jf"]


@dataclass(frozen=True)
class RunPaths:
    checkpoint: Path  # resumable state (persisted between interrupted runs)


def _save_resume_state(path, step, model, opt, best, fingerprint, val_history) -> None:
    state = {"step": step, "trainable": trainable_state(model), "optimizer": opt.state_dict(),
             "best": best, "fingerprint": fingerprint, "val_history": val_history}  # fmt: skip
    with atomic_path(path) as tmp:
        torch.save(state, tmp)


def _load_resume_state(path: Path, fingerprint: str) -> dict[str, Any] | None:
    if not path.is_file():
        return None
    state = torch.load(path, map_location="cpu", weights_only=True)
    return state if state.get("fingerprint") == fingerprint else None


def fit(model, train_reader, val_reader, settings: FitSettings, paths: RunPaths, live,
        device: torch.device, input_hash: str = "") -> dict[str, Any]:  # fmt: skip
    """Train `model`'s trainable parameters in place; returns a summary.

    On return the model holds the best validated weights (or the last ones if
    validation never ran). `live` is a dvclive.Live (or None) for curves.
    """
    rank = dist.get_rank() if dist.is_initialized() else 0
    world = dist.get_world_size() if dist.is_initialized() else 1
    s = settings
    model.to(device).train()
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=s.lr, weight_decay=s.weight_decay)
    forward = ClipForward(model, s)
    if world > 1:
        forward = torch.nn.parallel.DistributedDataParallel(forward, find_unused_parameters=True)

    # -- resume ------------------------------------------------------------------------
    fingerprint = s.fingerprint(f"{input_hash}|world={world}")
    resume = _load_resume_state(paths.checkpoint, fingerprint)
    start, best, val_history = 0, {"jf": -1.0, "step": 0, "state": None}, []
    if resume is not None:
        model.load_state_dict(resume["trainable"], strict=False)
        opt.load_state_dict(resume["optimizer"])
        start, best, val_history = resume["step"], resume["best"], resume["val_history"]
        print(f"resuming from step {start} ({paths.checkpoint})")

    # -- data: item k of the dataset is micro-batch k --------------------------------
    batches = StepBatches(train_reader, s.batch_size, s.image_size, s.seed, rank, world,
                          steps=s.steps * s.grad_accum)  # fmt: skip
    micro_steps = range(start * s.grad_accum, s.steps * s.grad_accum)
    loader = torch.utils.data.DataLoader(
        torch.utils.data.Subset(batches, list(micro_steps)), batch_size=None,
        num_workers=s.num_workers, persistent_workers=False,
    )  # fmt: skip
    autocast = torch.autocast("cuda", dtype=torch.bfloat16, enabled=s.amp and device.type == "cuda")

    # -- the loop ---------------------------------------------------------------------
    bar = tqdm(total=s.steps, initial=start, desc="train", disable=rank != 0, mininterval=5)
    step, t0, stalled = start, time.time(), 0
    parts_sum: dict[str, float] = {}
    for micro, batch in zip(micro_steps, loader, strict=True):
        step, accum_index = divmod(micro, s.grad_accum)
        gen = step_generator(s.seed, micro, rank)
        plan = rollout.sample_plan(batch.images.shape[1], s.prompts, gen)
        with autocast:
            parts = forward(batch.to(device), plan, gen)
        loss = parts["total"] / s.grad_accum
        if not torch.isfinite(loss):
            raise FloatingPointError(
                f"train: loss is {float(loss)} at step {step}; last good checkpoint "
                f"{paths.checkpoint} is untouched. Lower lr or check the data."
            )
        loss.backward()
        for k, v in parts.items():
            parts_sum[k] = parts_sum.get(k, 0.0) + float(v.detach()) / s.grad_accum
        if accum_index < s.grad_accum - 1:
            continue

        lr = s.lr * lr_factor(step, s)
        for group in opt.param_groups:
            group["lr"] = lr
        if s.grad_clip > 0:
            torch.nn.utils.clip_grad_norm_(params, s.grad_clip)
        opt.step()
        opt.zero_grad(set_to_none=True)
        step += 1
        bar.update(1)

        if rank == 0 and live is not None:
            for k, v in parts_sum.items():
                live.log_metric(f"train/loss_{k}" if k != "total" else "train/loss", v)
            live.log_metric("train/lr", lr)
        parts_sum = {}
        if step % s.val_every == 0 or step == s.steps:
            jf = validate(model, val_reader, s, device) if rank == 0 else 0.0
            if world > 1:  # every rank must take the same early-stopping decision
                shared = torch.tensor([jf], dtype=torch.float64)
                dist.broadcast(shared, src=0)
                jf = float(shared)
            val_history.append([step, jf])
            if rank == 0 and live is not None:
                live.log_metric("val/jf", jf)
            if jf > best["jf"]:
                best, stalled = {"jf": jf, "step": step, "state": trainable_state(model)}, 0
            else:
                stalled += 1
        if rank == 0 and live is not None:
            live.next_step()
        if rank == 0 and (step % s.checkpoint_every == 0 or step == s.steps):
            _save_resume_state(paths.checkpoint, step, model, opt, best, fingerprint, val_history)
        if s.early_stop_patience and stalled >= s.early_stop_patience:
            print(f"early stop at step {step}: no J&F gain in {stalled} validations")
            break
    bar.close()

    if best["state"] is not None:
        model.load_state_dict(best["state"], strict=False)
    elapsed = time.time() - t0
    return {"steps": step, "best_step": best["step"], "best_val_jf": best["jf"],
            "seconds": round(elapsed, 1), "val_history": val_history}  # fmt: skip


def build_for_training(model_name: str, image_size: int, checkpoint: Path,
                       trainable: tuple[str, ...]):  # fmt: skip
    cfg = build.load_model_config(model_name, image_size)
    model = build.build_model(cfg)
    build.load_checkpoint(model, checkpoint)
    build.set_trainable(model, trainable)
    return cfg, model
