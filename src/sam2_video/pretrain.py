"""Train the shipped tiny base from scratch: the pretrain pipeline (pretrain/dvc.yaml).

The base plays the part of SAM2.1 in the default run: every module is trained on rendered
*source*-domain scenes (distinct-looking objects), so it segments and tracks by appearance.
Two stages, each a stage of pretrain/dvc.yaml: `pretrain` (video: clips with a mask prompt
on the first frame, tracked through memory, from scratch) and `joint` (image batches with
point or box prompts and many objects per image, alternating with video batches, the image
encoder frozen; SAM2 also trains on SA-1B images and videos together). The fine-tuning
stage then adapts only the memory modules to the *target* domain. The recipe is
pretrain/params.yaml (params.PretrainParams); weights are stored in float16. Each step is
fit.py's (its optimizer, forward and update); this program draws the batches, schedules the
learning rate and scores the source domain.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable, Iterable
from pathlib import Path

import numpy as np
import torch

from sam2_video import fit
from sam2_video.data import transforms
from sam2_video.data.loader import Batch
from sam2_video.data.sources.synthetic import DOMAINS, render_scene
from sam2_video.evaluate import metrics
from sam2_video.evaluate.predict import object_prompts, predict_masks
from sam2_video.files import write_json_atomic
from sam2_video.model import build, rollout
from sam2_video.model.recipes import TINY_PRETRAIN_LOSSES
from sam2_video.params import PretrainParams

IMAGE_SIZE = 128
# the prompts whose source J&F each stage must reach (min_source_jf): the joint stage
# teaches clicks and boxes, so it is gated on all three
VIDEO_GATE, JOINT_GATE = ("mask",), rollout.PROMPT_KINDS


def scene_batch(rng: np.random.Generator, clips: int, frames: int, max_obj: int) -> Batch:
    """A batch (data.loader's) of `clips` source-domain scenes of `frames` frames: 1 to
    `max_obj` objects each supervised, one more rendered as a distractor."""
    scenes, keeps = [], []
    for _ in range(clips):
        n = int(rng.integers(1, max_obj + 1))
        scenes.append(render_scene(rng, DOMAINS["source"], frames, n + 1, IMAGE_SIZE))
        keeps.append(_shown(scenes[-1])[:n])
    return _stack(scenes, keeps)


# Still images of look-alike objects behind an occasional bar: per frame, what target
# frames show; what no still image shows is where each look-alike went (the memory's job).
ALIKE_STILLS = dataclasses.replace(DOMAINS["source"], alike=True, occluder_prob=0.3)


def image_batch(rng: np.random.Generator, images: int, objects: int, alike: float = 0.0) -> Batch:
    """A batch of `images` single source-domain frames (clips of one frame) of `objects`
    objects, each one shown supervised; each image's objects look alike with probability
    `alike` (no draw at 0, so a recipe without them draws the scenes it always drew)."""
    scenes = []
    for _ in range(images):
        domain = ALIKE_STILLS if alike and rng.random() < alike else DOMAINS["source"]
        scenes.append(render_scene(rng, domain, 1, objects, IMAGE_SIZE))
    return _stack(scenes, [_shown(scene) for scene in scenes])


def _shown(scene) -> np.ndarray:
    """Objects with more than a few pixels on the first frame (fewer are unlearnable)."""
    return np.flatnonzero(scene.visible[0].reshape(scene.visible.shape[1], -1).sum(1) > 30)


def _stack(scenes, keeps) -> Batch:
    frames = [transforms.resize_frames(scene.frames, IMAGE_SIZE) for scene in scenes]
    pairs = zip(scenes, keeps, strict=True)
    gts = [torch.from_numpy(scene.visible[:, keep]) for scene, keep in pairs]
    owners = [b for b, keep in enumerate(keeps) for _ in keep]
    names, keys = [f"scene{b}" for b in range(len(scenes))], [None] * len(scenes)  # no cache
    return Batch(torch.stack(frames), torch.cat(gts, 1), torch.tensor(owners), names, keys)


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


def pretrain(p: PretrainParams, report: Callable[[dict], None] = print):
    """The video stage: a tiny SAM2 trained from scratch; returns it and the records of
    each validation.

    Draws come from generators seeded by `p.seed` (scenes: numpy; prompts: torch) and, for
    parameter init and dropout, torch's global generator, which is restored afterwards.
    """
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(p.seed)
        model = build.build_model(build.load_model_config("tiny"))
        init_memory_attention(model, p.memory_attention_init)
        model.train()
        rng, gen = np.random.default_rng(p.seed), torch.Generator().manual_seed(p.seed)
        last, forward = min(p.steps, p.stop_at), _forward(model, p.prompts())
        batches = (
            (scene_batch(rng, p.clips, p.frames, p.max_objects), forward) for _ in range(last)
        )
        return model, _optimise(model, p, last, p.steps, batches, gen, {}, report)


def joint(model, p: PretrainParams, report: Callable[[dict], None] = print) -> list[dict]:
    """The joint stage, on the video stage's model: odd steps a batch of single frames with
    `p.image_objects` objects and a point or box prompt (+ correction clicks), even steps a
    video batch as in the video stage. The image encoder stays frozen, so the features
    memory learned to read do not move; the decoder learns to read prompts while it keeps
    tracking. Returns the records of each validation (source J&F per prompt).

    A stage that ends below `p.min_source_jf` with any prompt runs again from where it
    ended (its own one-cycle, the batches drawn on), up to `p.joint_restarts` times: some
    seeds learn clicks late (seed 1, docs/tiny_base.md). A seed that passes at the first end
    stops there, so its base is what the recipe without restarts gives, byte for byte.
    """
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(p.seed)
        model.image_encoder.requires_grad_(False)
        model.train()
        rng = np.random.default_rng([p.seed, 1])  # not the video stage's scenes again
        gen = torch.Generator().manual_seed(p.seed + 1)
        video = p.prompts()
        image = dataclasses.replace(video, prob_mask=0.0, prob_points=0.5, prob_box=0.5)
        video_forward, image_forward = _forward(model, video), _forward(model, image)

        def batches():
            for step in range(1, p.joint_steps + 1):
                if step % 2:
                    yield image_batch(rng, p.clips, p.image_objects, p.image_alike), image_forward
                else:
                    yield scene_batch(rng, p.clips, p.frames, p.max_objects), video_forward

        steps, tag, history = p.joint_steps, {"stage": "joint"}, []
        try:
            for restart in range(p.joint_restarts + 1):
                done = restart * steps
                history += _optimise(model, p, steps, steps, batches(), gen, tag, report, done)
                if below_gate(history[-1], p, JOINT_GATE) is None:
                    break
            return history
        finally:  # handed back trainable, as it came, even when a step fails
            model.image_encoder.requires_grad_(True)


def _forward(model, prompts) -> fit.ClipForward:
    """fit's forward (rollout and loss) of `prompts`, with the pretraining loss."""
    return fit.ClipForward(model, prompts, TINY_PRETRAIN_LOSSES)


def _optimise(
    model,
    p,
    last,
    schedule,
    batches: Iterable[tuple[Batch, fit.ClipForward]],
    gen,
    tag,
    report,
    done: int = 0,
) -> list[dict]:
    """`last` steps of a one-cycle schedule `schedule` steps long over the trainable
    parameters, each fit's step (forward, backward, `fit.update`); `batches` yields each
    step's batch and forward. At every `p.val_every` steps and at the last, a record: `tag`,
    step (counted on from `done` earlier steps), mean loss and the source J&F per prompt on
    `val_scenes(p.seed, p.val_scenes)`.

    AdamW without fit's fused kernel, and a one-cycle schedule (which also cycles Adam's
    beta1) instead of fit's warm-up and cosine: the shipped base was trained so, and
    either change would move its weights (pretrain/dvc.lock records their md5)."""
    opt = fit.optimizer(model, p.lr, weight_decay=0.01, fused=False)
    sched = torch.optim.lr_scheduler.OneCycleLR(
        opt, max_lr=p.lr, total_steps=max(schedule, 2), pct_start=0.05
    )
    scenes, history, start, running = val_scenes(p.seed, p.val_scenes), [], time.time(), 0.0
    for step, (batch, forward) in enumerate(batches, start=done + 1):
        plan = rollout.sample_plan(batch.frames.shape[1], forward.prompts, gen)
        loss = forward(batch, plan, gen, float(batch.gt.shape[1]))["total"]
        loss.backward()
        fit.update(model, opt, grad_clip=1.0)
        sched.step()
        running += float(loss.detach())
        if step % p.val_every == 0 or step == done + last:
            jf = {f"source_jf_{k}": v for k, v in source_jf(model, scenes).items()}
            record = {**tag, "step": step, "loss": round(running / p.val_every, 3), **jf}
            report({**record, "seconds": round(time.time() - start)})
            history.append(record)
            running = 0.0
    return history


def finish(
    model,
    history: list[dict],
    p: PretrainParams,
    weights: Path,
    metrics: Path,
    params_file: Path,
    kinds: tuple[str, ...] = VIDEO_GATE,
) -> dict:
    """Write a stage's outputs (float16 weights; {final, history} of its validations) and
    return its last record, unless that record's source J&F with a prompt of `kinds` is
    below `p.min_source_jf`: then nothing is written and a ValueError names `params_file`.
    The joint stage, which teaches clicks and boxes, passes all three kinds: a base that
    tracks but ignores clicks (seed 1's 0.202, docs/tiny_base.md) caps what fine-tuning its
    memory can gain with a click (docs/base_study.md)."""
    final = history[-1]
    short = below_gate(final, p, kinds)
    if short is not None:
        raise ValueError(
            f"{params_file}: {short}; no weights written: try another seed, or more steps "
            "(stop_at, joint_steps, joint_restarts)"
        )
    save_half(model, weights)
    write_json_atomic(metrics, {"final": final, "history": history})
    return final


def below_gate(record: dict, p: PretrainParams, kinds: tuple[str, ...]) -> str | None:
    """What in a validation record is below `p.min_source_jf` with a prompt of `kinds`, or
    None when every kind passes."""
    for kind in kinds:
        jf = record[f"source_jf_{kind}"]
        if jf < p.min_source_jf:
            return (
                f"source-domain J&F {jf:.3f} ({kind} prompt) at step {record['step']} is "
                f"below min_source_jf {p.min_source_jf}"
            )
    return None


def save_half(model: torch.nn.Module, out: Path) -> None:
    """Store float16 weights (a few MB); they load into the float32 model unchanged."""
    half = build.build_model(build.load_model_config("tiny")).half()
    half.load_state_dict(model.state_dict())
    build.save_checkpoint(half, out)
