"""Train the shipped tiny base from scratch: the pretrain pipeline (pretrain/dvc.yaml).

The base plays the part of SAM2.1 in the default run: every module is trained on rendered
*source*-domain video (distinct-looking objects), so it segments and tracks by appearance.
The fine-tuning stage then adapts only its memory modules to the *target* domain. The
recipe is pretrain/params.yaml (params.PretrainParams); weights are stored in float16.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from sam2_video.data.sources.synthetic import DOMAINS, render_scene
from sam2_video.evaluate import metrics
from sam2_video.evaluate.predict import object_prompts, predict_masks
from sam2_video.model import build, losses, rollout, transforms
from sam2_video.params import PretrainParams, defaults

IMAGE_SIZE = 128

# From scratch, focal loss (whose mean is dominated by background pixels) parks the model
# in "predict background" for thousands of steps; BCE with a heavier dice term gets
# out of that plateau quickly. Fine-tuning the tiny base uses the same loss (RECIPES).
PRETRAIN_LOSS = dataclasses.replace(
    defaults().train,
    loss_mask=20.0,
    loss_dice=5.0,
    loss_iou=1.0,
    loss_object_score=1.0,
    loss_temporal=0.0,
    use_focal=False,
)


def scene_batch(rng: np.random.Generator, clips: int, frames: int, max_obj: int):
    """(images (B,T,3,S,S), gt (T,N,S,S), obj_to_clip (N,)) of source-domain scenes."""
    images, gts, owners = [], [], []
    for b in range(clips):
        n = int(rng.integers(1, max_obj + 1))
        scene = render_scene(rng, DOMAINS["source"], frames, n + 1, IMAGE_SIZE)
        present = scene.visible[0].reshape(n + 1, -1).sum(1) > 30  # a few pixels: unlearnable
        keep = np.flatnonzero(present)[:n]
        images.append(transforms.frames_to_model_input(scene.frames, IMAGE_SIZE))
        gts.append(torch.from_numpy(scene.visible[:, keep]))
        owners += [b] * len(keep)
    return torch.stack(images), torch.cat(gts, 1), torch.tensor(owners)


def val_scenes(seed: int, count: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """Fixed source-domain videos (8 frames, up to 3 objects) to score progress on."""
    rng = np.random.default_rng(seed + 10_000)
    scenes = []
    for _ in range(count):
        scene = render_scene(rng, DOMAINS["source"], 8, 3, IMAGE_SIZE)
        present = np.flatnonzero(scene.visible[0].reshape(3, -1).sum(1) > 16)
        scenes.append((scene.frames, scene.visible[:, present]))
    return scenes


def source_jf(model, scenes) -> dict[str, float]:
    """J&F (means over objects) on `scenes` per first-frame prompt type, as evaluate scores."""
    out = {}
    for prompt in rollout.PROMPT_KINDS:
        scores = [
            metrics.score_clip(
                gt, predict_masks(model, frames, object_prompts(gt), prompt, IMAGE_SIZE)
            )
            for frames, gt in scenes
        ]
        out[prompt] = round(metrics.summarize(scores)["jf"], 4)
    model.train()
    return out


def init_memory_attention(model, bias: float) -> None:
    """Start memory cross-attention on "the same place in earlier frames".

    With equal constant query and key vectors, RoPE makes a query's score with a memory
    key a sum of cos(theta * offset): largest at offset 0. From PyTorch's random init, memory
    attention has to discover locality first, and tracking sat on a plateau (every object
    of a video given the same mask) for a run-dependent 750 to 1500+ steps.
    """
    with torch.no_grad():
        for layer in model.memory_attention.layers:
            layer.cross_attn_image.q_proj.bias.fill_(bias)
            layer.cross_attn_image.k_proj.bias.fill_(bias)


def prompt_recipe(p: PretrainParams):
    """The conditioning-frame prompts of pretraining, in the train params' form."""
    return dataclasses.replace(
        defaults().train,
        prob_mask=p.prob_mask,
        prob_points=p.prob_points,
        prob_box=p.prob_box,
        num_pos_points=1,
        include_center=False,
        box_jitter=0.1,
        num_correction_clicks=p.num_correction_clicks,
        max_cond_frames=p.max_cond_frames,
    )


def pretrain(p: PretrainParams, report: Callable[[dict], None] = print):
    """Train a tiny SAM2 from scratch; returns it and the source J&F of each validation.

    Draws come from generators seeded by `p.seed` (scenes: numpy; prompts: torch) and, for
    parameter init and dropout, torch's global generator, which is restored afterwards.
    """
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(p.seed)
        model = build.build_model(build.load_model_config("tiny"))
        init_memory_attention(model, p.memory_attention_init)
        return model, _train(model, p, report)


def _train(model, p: PretrainParams, report: Callable[[dict], None]) -> list[dict]:
    model.train()
    rng, gen = np.random.default_rng(p.seed), torch.Generator().manual_seed(p.seed)
    opt = torch.optim.AdamW(model.parameters(), lr=p.lr, weight_decay=0.01)
    sched = torch.optim.lr_scheduler.OneCycleLR(
        opt, max_lr=p.lr, total_steps=max(p.steps, 2), pct_start=0.05
    )
    scenes, cfg, history = val_scenes(p.seed, p.val_scenes), prompt_recipe(p), []
    start, running, last = time.time(), 0.0, min(p.steps, p.stop_at)
    for step in range(1, last + 1):
        images, gt, owners = scene_batch(rng, p.clips, p.frames, p.max_objects)
        plan = rollout.sample_plan(images.shape[1], cfg, gen)
        outputs = rollout.track(model, images, gt, owners, plan, cfg, gen)
        loss = losses.clip_losses(outputs, gt, PRETRAIN_LOSS)["total"]
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        sched.step()
        running += float(loss.detach())
        if step % p.val_every == 0 or step == last:
            record = {"step": step, "loss": round(running / p.val_every, 3)}
            record.update({f"source_jf_{k}": v for k, v in source_jf(model, scenes).items()})
            report({**record, "seconds": round(time.time() - start)})
            history.append(record)
            running = 0.0
    return history


def save_half(model: torch.nn.Module, out: Path) -> None:
    """Store float16 weights (a few MB); they load into the float32 model unchanged."""
    half = build.build_model(build.load_model_config("tiny")).half()
    half.load_state_dict(model.state_dict())
    build.save_checkpoint(half, out)
