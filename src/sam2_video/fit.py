"""The train loop, top to bottom: fine-tune SAM2's memory modules on clips of stored sources.

Reads like nanoGPT's train.py: the parsed params as params.py gives them (top-level lr and
seed, the train section), then model, optimizer, resume, and the loop (forward over clips ->
loss -> backward -> clip -> step) with validation, checkpoints and curves at intervals.
Runs on CPU or GPU, in one process or under torchrun (DDP: gloo on CPU, nccl on GPU).
Its step (`optimizer`, `ClipForward`: rollout and loss, `update`: clip and step) also
trains the tiny base from scratch (pretrain.py, under that program's own schedule).

Resuming is exact: a step's batch and prompts are functions of (seed, step, rank), the
checkpoint holds weights, optimizer, best-so-far and the logged curves, so a killed run
that resumes ends where an uninterrupted one would, with the same DVCLive history.
"""

from __future__ import annotations

import contextlib
import math
import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from tqdm import tqdm

from sam2_video.data import transforms
from sam2_video.data.loader import Batch, StepBatches, TrainingSources
from sam2_video.evaluate import metrics
from sam2_video.evaluate.predict import predict_clip
from sam2_video.files import atomic_path, sha256_bytes
from sam2_video.model import build, feature_cache, losses, rollout
from sam2_video.model.recipes import LossRecipe, PromptRecipe
from sam2_video.params import Params, TrainParams, to_dict


def fingerprint(p: Params, extra: str = "") -> str:
    """Identifies a run: a checkpoint of other settings or inputs is never resumed."""
    settings = {"lr": p.lr, "seed": p.seed, "train": to_dict(p.train)}
    return sha256_bytes((repr(settings) + extra).encode())[:16]


@dataclass
class RunState:
    """Everything a resumed run needs besides the weights and the optimizer."""

    step: int = 0
    best_jf: float = -1.0
    best_step: int = 0
    best_weights: dict[str, torch.Tensor] | None = None
    stalled: int = 0  # validations since the last improvement
    history: list[dict[str, float]] = field(default_factory=list)  # logged curves, per step


class ClipForward(torch.nn.Module):
    """Wraps SAM2 so that DDP sees one forward: the video rollout plus its loss."""

    def __init__(
        self,
        sam: torch.nn.Module,
        prompts: PromptRecipe,
        weights: LossRecipe,
        cache: feature_cache.EncoderCache | None = None,
        predictor_memory: bool = False,
    ):
        super().__init__()
        self.sam, self.prompts, self.weights, self.cache = sam, prompts, weights, cache
        self.predictor_memory = predictor_memory  # rollout.track's

    def forward(self, batch: Batch, plan: rollout.Plan, gen: torch.Generator, num_objects: float):
        images = transforms.normalize(batch.frames)  # (B, T, 3, S, S) float, on the device
        encoded = None
        if self.cache is not None:
            encoded = self.cache.encode(self.sam, images, batch.frame_keys)
        frames = rollout.track(
            self.sam,
            images,
            batch.gt,
            batch.obj_to_clip,
            plan,
            self.prompts,
            gen,
            encoded,
            predictor_memory=self.predictor_memory,
        )
        return losses.clip_losses(frames, batch.gt, self.weights, num_objects)


def collective_device(backend: str | None = None) -> torch.device:
    """Where this process's collective tensors live: NCCL moves CUDA tensors only, so this
    process's GPU (cuda:LOCAL_RANK, as `setup_process` picks it); gloo, the CPU.
    `backend`: the process group's (dist.get_backend()) unless given."""
    if (backend or dist.get_backend()) == "nccl":
        return torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
    return torch.device("cpu")


def setup_process(device_name: str) -> tuple[torch.device, int, int]:
    """This process's device, rank and world size; under torchrun (WORLD_SIZE set) also the
    process group: nccl on CUDA, gloo on the CPU.

    Under torchrun every CUDA name (`auto`, `cuda`, `cuda:0`) means this process's own GPU,
    cuda:LOCAL_RANK; it becomes the current CUDA device before any model is built (SAM2's
    position-encoding caches allocate on the current device).
    """
    world = int(os.environ.get("WORLD_SIZE", "1"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    device = build.rank_device(device_name, local_rank, world)
    if device.type == "cuda":
        torch.cuda.set_device(device)
    if world > 1:
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    return device, (dist.get_rank() if dist.is_initialized() else 0), world


def mean_objects_over_ranks(count: int, world: int) -> float:
    """SAM2's loss normaliser: the batch's object count averaged over DDP ranks."""
    if world == 1:
        return float(count)
    total = torch.tensor([float(count)], device=collective_device())
    dist.all_reduce(total)
    return float(total) / world


# Top-level parts of SAM2Base that every training step reads when a clip has a frame without
# a prompt (params.yaml's default train.trainable_modules; tests/test_fit.py checks that each
# of their parameters gets a gradient for every prompt kind)
READ_EVERY_STEP = frozenset(
    {
        "memory_attention",
        "memory_encoder",
        "maskmem_tpos_enc",
        "no_obj_embed_spatial",
        "obj_ptr_proj",
        "obj_ptr_tpos_proj",
        "no_obj_ptr",
    }
)


def ddp_finds_unused(model: torch.nn.Module, t: TrainParams) -> bool:
    """Whether DDP must search each step's graph for trainable parameters it left out.

    Needed when a trainable part is read by some steps only (the prompt encoder's point
    embeddings in a mask step, mask_downsample in a point step) or when every frame of a
    clip can be a conditioning frame (no frame then reads the memory); else every trainable
    parameter gets a gradient each step and the search is skipped."""
    trainable = {n.split(".")[0] for n, w in model.named_parameters() if w.requires_grad}
    return not (trainable <= READ_EVERY_STEP and t.max_cond_frames < t.clip_length)


def lr_factor(step: int, t: TrainParams) -> float:
    """Linear warm-up, then cosine decay to min_lr_ratio (multiplies the peak lr)."""
    if step < t.warmup_steps:
        return (step + 1) / t.warmup_steps
    span = max(t.steps - t.warmup_steps, 1)
    progress = min((step - t.warmup_steps) / span, 1.0)
    cosine = 0.5 * (1 + math.cos(math.pi * progress))
    return t.min_lr_ratio + (1 - t.min_lr_ratio) * cosine


def step_generator(seed: int, step: int, rank: int) -> torch.Generator:
    """Prompt randomness of one micro-step: a function of (seed, step, rank)."""
    return torch.Generator().manual_seed(step_seed(seed, step, rank))


def step_seed(seed: int, step: int, rank: int) -> int:
    state = np.random.SeedSequence([seed, step, rank]).generate_state(2, dtype=np.uint32)
    return int(state[0]) << 32 | int(state[1])


def param_groups(model: torch.nn.Module, lr_scale: dict[str, float]) -> list[dict]:
    """One AdamW group per trainable top-level module, each with its lr factor."""
    groups: dict[str, list] = {}
    for name, param in model.named_parameters():
        if param.requires_grad:
            groups.setdefault(name.split(".")[0], []).append(param)
    return [
        {"params": ps, "scale": lr_scale.get(mod, 1.0), "name": mod}
        for mod, ps in sorted(groups.items())
    ]


def optimizer(
    model: torch.nn.Module,
    lr: float,
    weight_decay: float,
    lr_scale: dict[str, float] | None = None,
    fused: bool = True,
) -> torch.optim.AdamW:
    """AdamW over the trainable parameters (`param_groups`; a group's lr is `lr` times its
    "scale"). fused: one kernel for all parameters instead of a loop over them (a few % of
    a tiny model's step; on CPU and CUDA); its float rounding differs from the loop's."""
    groups = param_groups(model, lr_scale or {})
    return torch.optim.AdamW(groups, lr=lr, weight_decay=weight_decay, fused=fused)


def update(model: torch.nn.Module, opt: torch.optim.Optimizer, grad_clip: float) -> None:
    """Apply the gradients: clipped to a total norm of `grad_clip` (0: not clipped), an
    optimizer step, then dropped."""
    if grad_clip > 0:
        torch.nn.utils.clip_grad_norm_(
            [w for w in model.parameters() if w.requires_grad], grad_clip
        )
    opt.step()
    opt.zero_grad(set_to_none=True)


def trainable_state(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {n: p.detach().cpu().clone() for n, p in model.named_parameters() if p.requires_grad}


def validate(model, val_reader, t: TrainParams, device) -> float:
    """Mean J&F over objects (a mask prompt on each object's first frame, as evaluate scores
    it by default) on the first `val_clips` validation clips."""
    per_clip = []
    for i in range(min(t.val_clips, len(val_reader))):
        clip = val_reader[i]
        pred = predict_clip(model, clip, "mask", t.image_size, device, track_later_objects=True)
        per_clip.append(metrics.score_clip(clip.masks, pred))
    model.train()
    return metrics.summarize(per_clip)["jf"]


def save_resume_state(path: Path, model, opt, run: RunState, fingerprint: str) -> None:
    state = {
        "fingerprint": fingerprint,
        "trainable": trainable_state(model),
        "optimizer": opt.state_dict(),
        "run": asdict(run),
    }
    with atomic_path(path) as tmp:
        torch.save(state, tmp)


def load_resume_state(path: Path, fingerprint: str) -> dict[str, Any] | None:
    """The saved state if it belongs to this very run (same fingerprint), else None."""
    if not path.is_file():
        return None
    state = torch.load(path, map_location="cpu", weights_only=True)
    return state if state.get("fingerprint") == fingerprint else None


def log_step(live, record: dict[str, float]) -> None:
    """Write one step's metrics to DVCLive at DVCLive step == training step."""
    if live is None:
        return
    live.step = int(record["step"])
    for key, value in record.items():
        if key != "step":
            live.log_metric(key, value)


def _broadcast(value: float, world: int) -> float:
    """Rank 0's value on every rank (so all ranks take the same decisions)."""
    if world == 1:
        return value
    shared = torch.tensor([value], dtype=torch.float64, device=collective_device())
    dist.broadcast(shared, src=0)
    return float(shared)


def _validate_and_track_best(model, val_reader, t, device, run: RunState, rank, world):
    jf = _broadcast(validate(model, val_reader, t, device) if rank == 0 else 0.0, world)
    if jf > run.best_jf:
        run.best_jf, run.best_step, run.stalled = jf, run.step, 0
        run.best_weights = trainable_state(model)
    else:
        run.stalled += 1
    return jf


def fit(
    model,
    train_sources: TrainingSources,
    val_reader,
    p: Params,
    checkpoint: Path,
    live,
    device: torch.device,
    fingerprint: str,
) -> dict[str, Any]:
    """Train `model`'s trainable parameters in place; returns a summary.

    On return the model holds the best validated weights (the last step's without a
    `val_reader`: no train-time validation). `live` is a dvclive.Live on
    rank 0 (None elsewhere). `checkpoint` is resumed from if its fingerprint matches.
    """
    s = p.train
    rank = dist.get_rank() if dist.is_initialized() else 0
    world = dist.get_world_size() if dist.is_initialized() else 1
    model.to(device).train()
    opt = optimizer(model, p.lr, s.weight_decay, s.lr_scale)
    cache = None
    if s.feature_cache_mb > 0 and feature_cache.encoder_is_frozen(model):
        cache = feature_cache.EncoderCache(s.feature_cache_mb * 2**20)
    prompts = s.prompts()
    forward = ClipForward(model, prompts, s.losses(), cache, s.memory_as_predictor)
    if world > 1:
        forward = torch.nn.parallel.DistributedDataParallel(
            forward,
            device_ids=[device] if device.type == "cuda" else None,
            find_unused_parameters=ddp_finds_unused(model, s),
        )

    run = RunState()
    saved = load_resume_state(checkpoint, fingerprint)
    if saved is not None:
        model.load_state_dict(saved["trainable"], strict=False)
        opt.load_state_dict(saved["optimizer"])
        run = RunState(**saved["run"])
        print(f"train: resuming from step {run.step} ({checkpoint})")
    for record in run.history:  # replay curves of the interrupted run
        log_step(live, record)
    if not run.history and val_reader is not None:
        # the base at step 0 is a candidate too: the shipped model is never worse than it
        # on this validation, and `train.steps: 0` still draws the validation curve
        jf = _validate_and_track_best(model, val_reader, s, device, run, rank, world)
        record = {"step": 0, "val/jf": jf}
        run.history.append(record)
        log_step(live, record)

    # item k of the dataset is micro-batch k; a resumed run starts where the last stopped
    batches = StepBatches(
        train_sources, s.batch_size, s.image_size, p.seed, rank, world, steps=s.steps * s.grad_accum
    )
    micro_steps = list(range(run.step * s.grad_accum, s.steps * s.grad_accum))
    loader = torch.utils.data.DataLoader(
        torch.utils.data.Subset(batches, micro_steps), batch_size=None, num_workers=s.num_workers
    )
    use_bf16 = s.amp and device.type == "cuda"
    bar = tqdm(total=s.steps, initial=run.step, desc="train", disable=rank != 0, mininterval=5)
    t0, sums = time.time(), {}
    for micro, batch in zip(micro_steps, loader, strict=True):
        gen = step_generator(p.seed, micro, rank)
        plan = rollout.sample_plan(batch.frames.shape[1], prompts, gen)
        num_objects = mean_objects_over_ranks(batch.gt.shape[1], world)
        last_micro = (micro + 1) % s.grad_accum == 0
        # DDP all-reduces the gradients on a step's last micro-batch only (no_sync covers
        # forward and backward of the others)
        with forward.no_sync() if world > 1 and not last_micro else contextlib.nullcontext():
            # SAM2's dropout draws from torch's global generator: fork it and seed the fork per
            # micro-step, so a resumed run draws the same masks and the caller's RNG is intact
            with (
                torch.random.fork_rng(devices=[device] if device.type == "cuda" else []),
                torch.autocast(device.type, dtype=torch.bfloat16, enabled=use_bf16),
            ):
                torch.manual_seed(step_seed(p.seed + 1, micro, rank))
                parts = forward(batch.to(device), plan, gen, num_objects)
            loss = parts["total"] / s.grad_accum
            if not torch.isfinite(loss):
                raise FloatingPointError(
                    f"train: loss is {float(loss)} at step {run.step}; the last good checkpoint "
                    f"{checkpoint} is untouched. Lower lr or check the data."
                )
            loss.backward()
        for k, v in parts.items():
            sums[k] = sums.get(k, 0.0) + float(v.detach()) / s.grad_accum
        if not last_micro:
            continue

        lr = p.lr * lr_factor(run.step, s)
        for group in opt.param_groups:
            group["lr"] = lr * group["scale"]
        update(model, opt, s.grad_clip)
        run.step += 1
        bar.update(1)

        # not "lr": the summary in `dvc exp show` holds the last value, next to the lr param
        record = {"step": run.step, "train/lr_at_step": lr}
        record.update(
            {f"train/loss_{k}" if k != "total" else "train/loss": v for k, v in sums.items()}
        )
        sums = {}
        if val_reader is not None and (run.step % s.val_every == 0 or run.step == s.steps):
            record["val/jf"] = _validate_and_track_best(
                model, val_reader, s, device, run, rank, world
            )
        run.history.append(record)
        log_step(live, record)
        if rank == 0 and (run.step % s.checkpoint_every == 0 or run.step == s.steps):
            save_resume_state(checkpoint, model, opt, run, fingerprint)
        if s.early_stop_patience and run.stalled >= s.early_stop_patience:
            print(f"train: early stop at step {run.step}: no J&F gain in {run.stalled} checks")
            break
    bar.close()
    if val_reader is not None and run.best_step == 0:
        print(
            f"train: the base (step 0) scored best on validation (J&F {run.best_jf:.4f}): "
            "it is the model this stage writes"
        )
    summary = {"steps": run.step, "best_step": run.step, "seconds": round(time.time() - t0, 1)}
    if val_reader is not None:
        summary.update(best_step=run.best_step, best_val_jf=round(run.best_jf, 4))
    if cache is not None:
        summary["feature_cache"] = {k: round(v, 3) for k, v in cache.stats().items()}

    if run.best_weights is not None:
        model.load_state_dict(run.best_weights, strict=False)
    return summary
