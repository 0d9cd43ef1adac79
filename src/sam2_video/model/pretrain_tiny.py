"""Regenerate the shipped tiny base weights: `make tiny-base` (python -m ...pretrain_tiny).

The base plays the part of SAM2.1 in the default run: every module is trained from
scratch on synthetic *source*-domain video (distinct-looking objects), with SAM2's mixed
prompts, so it can segment and track by appearance. The fine-tuning stage then adapts
only its memory modules to the *target* domain. Weights are stored in float16 (a few MB).
"""

from __future__ import annotations

import argparse
import dataclasses
import time
from pathlib import Path

import numpy as np
import torch

from sam2_video.data.sources.synthetic import DOMAINS, render_scene
from sam2_video.evaluate import metrics
from sam2_video.evaluate.predict import object_prompts, predict_masks
from sam2_video.model import build, losses, rollout, transforms
from sam2_video.params import defaults

IMAGE_SIZE = 128


def scene_batch(rng: np.random.Generator, domain: str, clips: int, frames: int, max_obj: int):
    """(images (B,T,3,S,S), gt (T,N,S,S), obj_to_clip (N,)) rendered on the fly."""
    images, gts, owners = [], [], []
    for b in range(clips):
        n = int(rng.integers(1, max_obj + 1))
        scene = render_scene(rng, DOMAINS[domain], frames, n + 1, IMAGE_SIZE)
        present = scene.visible[0].reshape(n + 1, -1).sum(1) > 30  # a few pixels: unlearnable
        keep = np.flatnonzero(present)[:n]
        images.append(transforms.frames_to_model_input(scene.frames, IMAGE_SIZE))
        gts.append(torch.from_numpy(scene.visible[:, keep]))
        owners += [b] * len(keep)
    return torch.stack(images), torch.cat(gts, 1), torch.tensor(owners)


def source_val_jf(model, scenes) -> dict[str, float]:
    """J&F on fixed source-domain scenes, per first-frame prompt type (progress report)."""
    out = {}
    for prompt in ("mask", "points"):
        scores = [
            metrics.score_clip(
                gt, predict_masks(model, frames, object_prompts(gt), prompt, IMAGE_SIZE)
            )
            for frames, gt in scenes
        ]
        out[prompt] = round(metrics.summarize(scores)["jf"], 3)
    model.train()
    return out


def val_scenes(seed: int, count: int = 8):
    rng = np.random.default_rng(seed + 10_000)
    scenes = []
    for _ in range(count):
        scene = render_scene(rng, DOMAINS["source"], 8, 3, IMAGE_SIZE)
        present = np.flatnonzero(scene.visible[0].reshape(3, -1).sum(1) > 16)
        scenes.append((scene.frames, scene.visible[:, present]))
    return scenes


# From scratch, focal loss (whose mean is dominated by background pixels) parks the model
# in "predict background" for thousands of steps; BCE with a heavier dice term gets
# out of that plateau quickly. Fine-tuning defaults to this same loss (train.use_focal
# false, loss_dice 5): tuning the tiny base with SAM2's focal weights lowered target J&F.
PRETRAIN_LOSS = dataclasses.replace(
    defaults().train,
    loss_mask=20.0,
    loss_dice=5.0,
    loss_iou=1.0,
    loss_object_score=1.0,
    loss_temporal=0.0,
    use_focal=False,
)


IMAGE_PROMPTS = dataclasses.replace(
    defaults().train,
    prob_mask=0.0,
    prob_points=0.6,
    prob_box=0.4,
    num_pos_points=1,
    include_center=False,
    box_jitter=0.1,
    num_correction_clicks=2,
    max_cond_frames=1,
)


def pretrain(
    steps: int,
    seed: int,
    lr: float,
    log_every: int = 50,
    val_every: int = 250,
    frames: int = 6,
    image_steps: int = 0,
    mask_prob: float = 0.4,
    stop_at: int | None = None,
    val_count: int = 8,
) -> tuple[torch.nn.Module, dict[str, float]]:
    """`image_steps` of single-frame SAM training (cheap; teaches the encoder and decoder to
    segment from prompts), then video steps of `frames` frames (teaches the memory).
    Returns the model and its source-domain J&F at the last step."""
    torch.manual_seed(seed)  # parameter init of a model built from scratch
    model = build.build_model(build.load_model_config("tiny"))
    model.train()
    rng, gen = np.random.default_rng(seed), torch.Generator().manual_seed(seed)
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.01)
    sched = torch.optim.lr_scheduler.OneCycleLR(
        opt, max_lr=lr, total_steps=max(steps, 2), pct_start=0.05
    )
    scenes = val_scenes(seed, val_count)
    prompt_cfg = dataclasses.replace(
        IMAGE_PROMPTS,
        prob_mask=mask_prob,
        prob_points=(1 - mask_prob) / 2,
        prob_box=(1 - mask_prob) / 2,
        num_correction_clicks=1,
        max_cond_frames=2,
    )
    weights, start, running = PRETRAIN_LOSS, time.time(), 0.0
    source_jf = {"mask": 0.0, "points": 0.0}
    for step in range(1, steps + 1):
        video = step > image_steps
        images, gt, owners = scene_batch(
            rng, "source", clips=4 if video else 8, frames=frames if video else 1, max_obj=3
        )
        cfg = prompt_cfg if video else IMAGE_PROMPTS  # a mask prompt alone teaches nothing
        plan = rollout.sample_plan(images.shape[1], cfg, gen)
        outputs = rollout.track(model, images, gt, owners, plan, cfg, gen)
        loss = losses.clip_losses(outputs, gt, weights)["total"]
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        sched.step()
        running += float(loss.detach())
        if step % log_every == 0:
            print(
                f"step {step}/{steps} loss {running / log_every:.3f} ({time.time() - start:.0f}s)",
                flush=True,
            )
            running = 0.0
        if step % val_every == 0 or step in (steps, stop_at):
            source_jf = source_val_jf(model, scenes)
            print(f"step {step}: source-domain J&F {source_jf}", flush=True)
        if stop_at is not None and step >= stop_at:
            break
    return model, source_jf


# Tracking by memory is learnt in a jump: source J&F sits near 0.33 (every object of a video
# gets the same mask: memory does not yet tell them apart), then leaps to 0.6-0.8. When the
# jump comes varies from run to run (before step 750 for the shipped weights, after step 1500
# in other runs: code revision and thread count change the float rounding).
PLATEAU_HELP = (
    "source-domain J&F {jf:.3f} at the last step: memory has not yet learnt to tell objects "
    "apart (the ~0.33 plateau). {out} was left as it was; run again with another --seed, "
    "or a later --stop-at."
)


def save_half(model: torch.nn.Module, out: Path) -> None:
    """Store float16 weights (a few MB); they load into the float32 model unchanged."""
    half = build.build_model(build.load_model_config("tiny")).half()
    half.load_state_dict(model.state_dict())
    build.save_checkpoint(half, out)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    # The shipped weights: this schedule (2000 steps) stopped after 750 steps (time budget),
    # 2 CPU threads, about 3.5 minutes, code of commit 05a7c7b; source-domain J&F (mask
    # prompt) 0.57 at step 750. The same command with later code and one thread was still
    # on the plateau at step 1500 (PLATEAU_HELP): it then refuses to overwrite the weights.
    parser.add_argument("--steps", type=int, default=2000)
    parser.add_argument("--stop-at", type=int, default=750)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--frames", type=int, default=4)
    parser.add_argument("--image-steps", type=int, default=0)
    parser.add_argument("--mask-prob", type=float, default=1.0)
    parser.add_argument("--val-every", type=int, default=250)
    parser.add_argument("--val-scenes", type=int, default=8)
    parser.add_argument("--min-source-jf", type=float, default=0.5)
    parser.add_argument("--out", type=Path, default=build.tiny_base_weights_path())
    args = parser.parse_args(argv)
    model, source_jf = pretrain(
        args.steps,
        args.seed,
        args.lr,
        val_every=args.val_every,
        frames=args.frames,
        image_steps=args.image_steps,
        mask_prob=args.mask_prob,
        stop_at=args.stop_at,
        val_count=args.val_scenes,
    )
    if source_jf["mask"] < args.min_source_jf:
        raise SystemExit(PLATEAU_HELP.format(jf=source_jf["mask"], out=args.out))
    save_half(model, args.out)
    print(f"wrote {args.out} ({args.out.stat().st_size / 1e6:.1f} MB)")


if __name__ == "__main__":
    main()
