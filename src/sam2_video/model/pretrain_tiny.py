"""Train the shipped tiny base from scratch: the pretrain pipeline (pretrain/dvc.yaml).

The base plays the part of SAM2.1 in the default run: every module is trained on rendered
*source*-domain scenes (distinct-looking objects), so it segments and tracks by appearance.
As SAM2 learned on SA-1B images before video, an image stage comes first (single frames,
point or box prompts with correction clicks, many objects per image) and a video stage
second (clips, the first frame prompted, tracking through memory). The fine-tuning stage
then adapts only the memory modules to the *target* domain. The recipe is
pretrain/params.yaml (params.PretrainParams); weights are stored in float16.
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
    """(images (B,T,3,S,S), gt (T,N,S,S), obj_to_clip (N,)) of source-domain scenes: 1 to
    `max_obj` objects each supervised, one more rendered as a distractor."""
    scenes, keeps = [], []
    for _ in range(clips):
        n = int(rng.integers(1, max_obj + 1))
        scenes.append(render_scene(rng, DOMAINS["source"], frames, n + 1, IMAGE_SIZE))
        keeps.append(_shown(scenes[-1])[:n])
    return _stack(scenes, keeps)


def image_batch(rng: np.random.Generator, images: int, objects: int):
    """(images (B,1,3,S,S), gt (1,N,S,S), obj_to_clip (N,)): single source-domain frames of
    `objects` objects, each one shown supervised."""
    scenes = [render_scene(rng, DOMAINS["source"], 1, objects, IMAGE_SIZE) for _ in range(images)]
    return _stack(scenes, [_shown(scene) for scene in scenes])


def _shown(scene) -> np.ndarray:
    """Objects with more than a few pixels on the first frame (fewer are unlearnable)."""
    return np.flatnonzero(scene.visible[0].reshape(scene.visible.shape[1], -1).sum(1) > 30)


def _stack(scenes, keeps):
    images = [transforms.frames_to_model_input(scene.frames, IMAGE_SIZE) for scene in scenes]
    pairs = zip(scenes, keeps, strict=True)
    gts = [torch.from_numpy(scene.visible[:, keep]) for scene, keep in pairs]
    owners = [b for b, keep in enumerate(keeps) for _ in keep]
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


def source_image_jf(model, scenes) -> dict[str, float]:
    """J&F (means over objects) of the first frames of `scenes` by point or box prompt."""
    out = {}
    for prompt in ("points", "box"):
        scores = [
            metrics.score_clip(
                gt[:1],
                predict_masks(model, frames[:1], object_prompts(gt[:1]), prompt, IMAGE_SIZE),
                skip_first_last=False,
            )
            for frames, gt in scenes
        ]
        out[prompt] = round(metrics.summarize(scores)["jf"], 4)
    model.train()
    return out


def init_decoder_attention(model, scale: float) -> None:
    """Start the mask decoder's prompt-image cross-attention on "where the prompt is".

    Prompt tokens and image positions both carry SAM's random-Fourier position encoding
    [sin(2 pi x B), cos(2 pi x B)], whose dot product between two places is a sum of
    cos(2 pi (x - y) B): largest where they coincide. Query and key projections that keep
    (a scaled copy of) those sin/cos pairs make a point or box corner attend to its own
    place from the first step; from PyTorch's random init (4 dims per head at d_model 64)
    the image stage needs longer to find it (README: the pretrain pipeline).
    """
    transformer = model.sam_mask_decoder.transformer
    attentions = [transformer.final_attn_token_to_image]
    for layer in transformer.layers:
        attentions += [layer.cross_attn_token_to_image, layer.cross_attn_image_to_token]
    with torch.no_grad():
        for attention in attentions:
            inner, channels = attention.internal_dim, attention.q_proj.in_features
            keep = torch.zeros(inner, channels)  # row 2f: sin of frequency f, row 2f+1: its cos
            rows = torch.arange(inner)
            keep[rows, rows // 2 + (rows % 2) * (channels // 2)] = scale
            for proj in (attention.q_proj, attention.k_proj):
                proj.weight.copy_(keep)
                proj.bias.zero_()


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
    """Train a tiny SAM2 from scratch; returns it and the records of each validation.

    Draws come from generators seeded by `p.seed` (scenes: numpy; prompts: torch) and, for
    parameter init and dropout, torch's global generator, which is restored afterwards.
    """
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(p.seed)
        model = build.build_model(build.load_model_config("tiny"))
        init_memory_attention(model, p.memory_attention_init)
        if p.decoder_attention_init > 0:
            init_decoder_attention(model, p.decoder_attention_init)
        model.train()
        rng, gen = np.random.default_rng(p.seed), torch.Generator().manual_seed(p.seed)
        history = _image_stage(model, p, rng, gen, report) if p.image_steps else []
        return model, history + _video_stage(model, p, rng, gen, report)


def _image_stage(model, p: PretrainParams, rng, gen, report) -> list[dict]:
    """Single frames, point or box prompts with correction clicks: segmenting from prompts."""
    cfg = dataclasses.replace(
        prompt_recipe(p), prob_mask=0.0, prob_points=0.5, prob_box=0.5, max_cond_frames=1
    )
    scenes = val_scenes(p.seed, p.val_scenes)

    def validate(step: int, loss: float) -> dict:
        jf = {f"image_jf_{k}": v for k, v in source_image_jf(model, scenes).items()}
        return {"stage": "image", "step": step, "loss": loss, **jf}

    batches = (image_batch(rng, p.clips, p.image_objects) for _ in range(p.image_steps))
    return _optimise(model, p, p.image_steps, p.image_steps, batches, cfg, gen, validate, report)


def _video_stage(model, p: PretrainParams, rng, gen, report) -> list[dict]:
    """Clips with the first frame prompted, tracked through memory."""
    scenes, last = val_scenes(p.seed, p.val_scenes), min(p.steps, p.stop_at)

    def validate(step: int, loss: float) -> dict:
        jf = {f"source_jf_{k}": v for k, v in source_jf(model, scenes).items()}
        return {"step": step, "loss": loss, **jf}

    batches = (scene_batch(rng, p.clips, p.frames, p.max_objects) for _ in range(last))
    return _optimise(model, p, last, p.steps, batches, prompt_recipe(p), gen, validate, report)


def _optimise(model, p, last, schedule, batches, cfg, gen, validate, report) -> list[dict]:
    """`last` steps of a one-cycle schedule `schedule` steps long; a record at every
    `p.val_every` steps and at the last."""
    opt = torch.optim.AdamW(model.parameters(), lr=p.lr, weight_decay=0.01)
    sched = torch.optim.lr_scheduler.OneCycleLR(
        opt, max_lr=p.lr, total_steps=max(schedule, 2), pct_start=0.05
    )
    history, start, running = [], time.time(), 0.0
    for step, (images, gt, owners) in enumerate(batches, start=1):
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
            record = validate(step, round(running / p.val_every, 3))
            report({**record, "seconds": round(time.time() - start)})
            history.append(record)
            running = 0.0
    return history


def save_half(model: torch.nn.Module, out: Path) -> None:
    """Store float16 weights (a few MB); they load into the float32 model unchanged."""
    half = build.build_model(build.load_model_config("tiny")).half()
    half.load_state_dict(model.state_dict())
    build.save_checkpoint(half, out)
