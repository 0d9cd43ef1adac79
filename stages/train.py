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
from sam2_video.files import sha256_file, source_digest, write_bytes_atomic, write_json_atomic
from sam2_video.model import build
from sam2_video.params import load_params

RAW, SHARDS, MODEL = Path("data/raw"), Path("data/shards"), Path("data/model")
CHECKPOINTS, LIVE_DIR = Path("data/checkpoints"), Path("dvclive/train")
RUN_LOG = Path("logs/train.json")
# the curves dvc.yaml plots (tests/test_train_stage.py checks the two lists agree)
CURVES = ("train/loss", "train/lr_at_step", "val/jf")


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


def write_empty_curves(metrics_dir: Path, curves: tuple[str, ...]) -> None:
    """A header-only TSV for each curve no step logged (`train.steps: 0` logs no loss and no
    lr), so the curves dvc.yaml plots exist and `dvc plots show` draws them empty."""
    for name in curves:
        path = metrics_dir / f"{name}.tsv"
        if not path.exists():
            path.parent.mkdir(parents=True, exist_ok=True)
            write_bytes_atomic(path, f"step\t{Path(name).name}\n".encode())


def main() -> None:
    p = load_params()
    build.check_gpu_count(p.train.device, p.train.nproc_per_node)  # before any work
    if p.train.nproc_per_node > 1 and "WORLD_SIZE" not in os.environ:
        relaunch_under_torchrun(p.train.nproc_per_node)
    # world: WORLD_SIZE, set by torchrun; each process on its own GPU (cuda:LOCAL_RANK)
    device, rank, world = fit.setup_process(p.train.device)
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
    train_reader = ShardReader(SHARDS / "train", training_length=p.train.clip_length)
    # train-time validation on the tune split, held out of training and of evaluate's val
    tune = SHARDS / "tune"
    val_reader = ShardReader(tune) if tune.is_dir() else None
    inputs = sha256_file(base) + sha256_file(SHARDS / "train" / "manifest.json") + code_digest()
    fingerprint = fit.fingerprint(p, f"{inputs}|world={world}")
    live = Live(str(LIVE_DIR), dvcyaml=False, save_dvc_exp=False) if rank == 0 else None
    # with train.steps 0 this only scores the base (step 0), which is then the written model
    summary = fit.fit(
        model,
        train_reader,
        val_reader,
        p,
        CHECKPOINTS / "resume.pt",
        live,
        device,
        fingerprint,
    )
    if rank == 0:
        MODEL.mkdir(parents=True, exist_ok=True)
        CHECKPOINTS.mkdir(parents=True, exist_ok=True)  # an output, even when nothing was saved
        build.save_checkpoint(model, MODEL / "sam2_finetuned.pt")
        build.save_model_config(cfg, MODEL / "sam2_model.yaml")
        # wall-clock seconds and cache hits (a resumed run starts cold) describe the run, not
        # its result: not metrics (`dvc exp show` compares results), not in the model folder
        # (equal weights hash equal)
        run_log = {k: v for k, v in summary.items() if k in ("seconds", "feature_cache")}
        kept = {k: v for k, v in summary.items() if k not in run_log}
        write_json_atomic(MODEL / "train_summary.json", kept)
        write_json_atomic(RUN_LOG, run_log)
        live.summary.update(kept)
        live.make_summary()
        live.end()
        write_empty_curves(LIVE_DIR / "plots" / "metrics", CURVES)
        print(f"train: done {summary}")
    if dist.is_initialized():
        dist.destroy_process_group()


if __name__ == "__main__":
    run_stage("train", main)
