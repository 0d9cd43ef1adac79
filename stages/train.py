"""train: fine-tune the base model's trainable modules on the train shards.

Writes data/model/sam2_finetuned.pt (a standard SAM2 checkpoint) and
data/model/sam2_model.yaml (its model config), DVCLive curves under dvclive/train, and
resumable state under data/checkpoints (persisted: a killed run resumes from it).
Run it under torchrun for several processes (DDP): gloo on CPU, nccl on GPU.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import torch
import torch.distributed as dist
from dvclive import Live

import sam2_video
from sam2_video import fit
from sam2_video.data.shards import ShardReader
from sam2_video.errors import run_stage
from sam2_video.files import sha256_file, source_digest, write_json_atomic
from sam2_video.model import build, losses, rollout
from sam2_video.params import Params, load_params

RAW, SHARDS, MODEL = Path("data/raw"), Path("data/shards"), Path("data/model")
CHECKPOINTS, LIVE_DIR = Path("data/checkpoints"), Path("dvclive/train")


def settings_from(p: Params) -> fit.FitSettings:
    t = p.train
    return fit.FitSettings(
        steps=t.steps,
        lr=p.lr,
        batch_size=t.batch_size,
        grad_accum=t.grad_accum,
        weight_decay=t.weight_decay,
        warmup_steps=t.warmup_steps,
        min_lr_ratio=t.min_lr_ratio,
        grad_clip=t.grad_clip,
        image_size=t.image_size,
        seed=p.seed,
        lr_scale=tuple(sorted(t.lr_scale.items())),
        prompts=rollout.PromptConfig(
            prob_mask=t.prob_mask,
            prob_points=t.prob_points,
            prob_box=t.prob_box,
            num_pos_points=t.num_pos_points,
            include_center=t.include_center,
            box_jitter=t.box_jitter,
            num_correction_clicks=t.num_correction_clicks,
            max_cond_frames=t.max_cond_frames,
        ),
        loss_weights=losses.LossWeights(
            mask=t.loss_mask,
            dice=t.loss_dice,
            iou=t.loss_iou,
            object_score=t.loss_object_score,
            temporal=t.loss_temporal,
            use_focal=t.use_focal,
        ),
        amp=t.amp,
        num_workers=t.num_workers,
        feature_cache_mb=t.feature_cache_mb,
        checkpoint_every=t.checkpoint_every,
        val_every=t.val_every,
        val_clips=t.val_clips,
        early_stop_patience=t.early_stop_patience,
        memory_as_predictor=t.memory_as_predictor,
    )


def code_digest() -> str:
    """Hash of this script and the package's code: a checkpoint written by other code (DVC
    re-runs the stage after a code change) must be trained afresh, not resumed."""
    return source_digest(Path(sam2_video.__file__).parent, extra_files=(Path(__file__),))


def relaunch_under_torchrun(nproc: int) -> None:
    """Replace this process by torchrun running this script on `nproc` processes."""
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        f"--nproc_per_node={nproc}",
        __file__,
    ]
    os.execvp(cmd[0], cmd)


def main() -> None:
    p = load_params()
    if p.train.nproc_per_node > 1 and "WORLD_SIZE" not in os.environ:
        relaunch_under_torchrun(p.train.nproc_per_node)
    world = int(os.environ.get("WORLD_SIZE", "1"))  # set by torchrun
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    device = build.pick_device(p.train.device, local_rank)
    if world > 1:
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    rank = dist.get_rank() if dist.is_initialized() else 0
    torch.use_deterministic_algorithms(device.type == "cpu", warn_only=True)

    base = RAW / "base_checkpoint.pt"
    if not base.is_file():
        raise FileNotFoundError(f"{base}: not found; run the fetch stage (dvc repro fetch)")
    cfg = build.load_model_config(p.train.model, p.train.image_size)
    model = build.build_model(cfg)
    build.load_checkpoint(model, base)
    build.set_trainable(model, p.train.trainable_modules)
    if rank == 0:
        for name, (total, trainable) in build.parameter_summary(model).items():
            print(f"params {name:24s} total {total:>10,d} trainable {trainable:>10,d}")
    train_reader, val_reader = ShardReader(SHARDS / "train"), ShardReader(SHARDS / "val")
    settings = settings_from(p)
    inputs = sha256_file(base) + sha256_file(SHARDS / "train" / "manifest.json") + code_digest()
    fingerprint = settings.fingerprint(f"{inputs}|world={world}|{p.train.trainable_modules}")
    live = Live(str(LIVE_DIR), dvcyaml=False, save_dvc_exp=False) if rank == 0 else None
    summary = {"steps": 0}
    if p.train.steps > 0:
        summary = fit.fit(
            model,
            train_reader,
            val_reader,
            settings,
            CHECKPOINTS / "resume.pt",
            live,
            device,
            fingerprint,
        )
    if rank == 0:
        MODEL.mkdir(parents=True, exist_ok=True)
        build.save_checkpoint(model, MODEL / "sam2_finetuned.pt")
        build.save_model_config(cfg, MODEL / "sam2_model.yaml")
        # wall-clock seconds and cache hits (a resumed run starts cold) stay out of the
        # model folder, so equal weights hash equal
        kept = {k: v for k, v in summary.items() if k not in ("seconds", "feature_cache")}
        write_json_atomic(MODEL / "train_summary.json", kept)
        live.summary.update(summary)
        live.make_summary()
        live.end()
        print(f"train: done {summary}")
    if dist.is_initialized():
        dist.destroy_process_group()


if __name__ == "__main__":
    run_stage("train", main)
