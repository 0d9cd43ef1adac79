"""SAM2's video forward over a batch of clips, exposing what training needs.

`track` is the loop of SAM2's own trainer (`SAM2Train.forward_tracking`) written against
SAM2Base's lower-level pieces, so that every frame yields the multimask logits, IoU
predictions and object-score logits of every prediction step (SAM2Base.track_step in
train mode drops the object scores). Conditioning frames get prompts from ground truth;
the other frames are tracked through memory. The same loop, in eval mode with one
conditioning frame, is SAM2VideoPredictor's inference. How conditioning frames are
prompted is a recipes.PromptRecipe: the training run's, or evaluation's (EVAL_PROMPTS).
`track_video` is that inference loop over one video, frame by frame, in memory that does
not grow with its length.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from sam2_video.model import feature_cache, prompts
from sam2_video.model.recipes import PromptRecipe

PROMPT_KINDS = ("mask", "points", "box")


@dataclass(frozen=True)
class Plan:
    """Which frames are conditioning frames, how they are prompted, which get corrections."""

    cond_frames: tuple[int, ...]
    kind: str
    correction_frames: tuple[int, ...] = ()


@dataclass
class Step:
    multimask_logits: torch.Tensor  # (N, M, S, S)
    ious: torch.Tensor  # (N, M)
    object_score_logits: torch.Tensor  # (N, 1)


@dataclass
class FrameOutput:
    steps: list[Step]
    logits: torch.Tensor  # (N, 1, S, S) the mask the memory encoder saw
    low_res_logits: torch.Tensor  # (N, 1, S/4, S/4) what SAM2VideoPredictor upsamples


def sample_plan(num_frames: int, recipe: PromptRecipe, gen: torch.Generator) -> Plan:
    """Prompt kind and conditioning frames for one training batch (SAM2's sampling)."""
    probs = torch.tensor([recipe.prob_mask, recipe.prob_points, recipe.prob_box])
    kind = PROMPT_KINDS[int(torch.multinomial(probs, 1, generator=gen))]
    max_cond = min(recipe.max_cond_frames, num_frames)
    n_cond = int(torch.randint(1, max_cond + 1, (1,), generator=gen))
    extra = torch.randperm(num_frames - 1, generator=gen)[: n_cond - 1] + 1
    cond = (0, *sorted(int(t) for t in extra))
    corrections = cond if kind != "mask" and recipe.num_correction_clicks > 0 else ()
    return Plan(cond_frames=cond, kind=kind, correction_frames=corrections)


def image_features(model, images: torch.Tensor, encoder_grad: bool, encoded=None):
    """Backbone features of (F, 3, S, S) images as SAM2Base._prepare_backbone_features gives.

    The image encoder runs without an autograd graph unless it is being trained; the
    decoder's high-res projections (conv_s0/s1) always follow their own requires_grad.
    `encoded`: feature_cache.encode_clip's output for these images, when the caller has it
    (raw encoder levels, or with the frozen projections already applied); it is read,
    never modified.
    """
    if encoded is None:
        with torch.set_grad_enabled(encoder_grad and torch.is_grad_enabled()):
            encoded = model.image_encoder(images)
    if feature_cache.SAM_FPN in encoded:
        fpn = encoded[feature_cache.SAM_FPN]
    else:
        fpn = feature_cache.project_fpn(model, encoded["backbone_fpn"])
    backbone_out = {"backbone_fpn": fpn, "vision_pos_enc": encoded["vision_pos_enc"]}
    _, feats, pos, sizes = model._prepare_backbone_features(backbone_out)
    return feats, pos, sizes  # feats/pos: lists of (HW, F, C)


def _prompt_inputs(kind: str, gt: torch.Tensor, recipe: PromptRecipe, gen: torch.Generator):
    """(point_inputs, mask_inputs) for one conditioning frame; gt (N, S, S) bool."""
    if kind == "mask":
        return None, gt[:, None].float()
    if kind == "points":
        coords, labels = prompts.point_prompts(
            gt, recipe.num_pos_points, recipe.include_center, gen
        )
    else:
        coords, labels = prompts.box_prompts(gt, recipe.box_jitter, gen)
    return {"point_coords": coords, "point_labels": labels}, None


def _correct(model, step0, sam_out, gt, point_inputs, frame_ctx, n_clicks, gen):
    """SAM2's iterative correction: add one click from the error region, decode again."""
    high_res_features, pix_feat, is_init = frame_ctx
    steps = [step0]
    for _ in range(n_clicks):
        low_res, high_res = sam_out[3], sam_out[4]
        coords, labels = prompts.correction_clicks(gt, high_res[:, 0] > 0, gen)
        pts = prompts.concat_points(
            (point_inputs["point_coords"], point_inputs["point_labels"]), coords, labels
        )
        point_inputs = {"point_coords": pts[0], "point_labels": pts[1]}
        sam_out = model._forward_sam_heads(
            backbone_features=pix_feat,
            point_inputs=point_inputs,
            mask_inputs=low_res,
            high_res_features=high_res_features,
            multimask_output=model._use_multimask(is_init, point_inputs),
        )
        steps.append(Step(sam_out[1], sam_out[2], sam_out[6]))
    return steps, sam_out, point_inputs


# Top-level parts of SAM2Base that decoding a conditioning frame from its prompts never
# reads (with directly_add_no_mem_embed it reads the features, no_mem_embed, the prompt
# encoder, the mask decoder, mask_downsample and the object-pointer head): the memory path
MEMORY_PATH = (
    "image_encoder",
    "memory_attention",
    "memory_encoder",
    "maskmem_tpos_enc",
    "no_mem_pos_enc",
    "no_obj_embed_spatial",
    "obj_ptr_tpos_proj",
)


def cond_decoding_is_frozen(model, feats: list[torch.Tensor]) -> bool:
    """Whether conditioning frames can be decoded in inference mode: no weight their
    decoding reads is trained and their features carry no graph (the usual fine-tuning of
    the memory modules). Then their up to 1 + clicks decoder passes skip all autograd
    bookkeeping; their outputs still feed the memory encoder, which trains, as inputs.
    """
    if not model.directly_add_no_mem_embed or any(f.requires_grad for f in feats):
        return False  # without it, a conditioning frame goes through memory attention
    return not any(
        p.requires_grad
        for name, p in model.named_parameters()
        if name.split(".")[0] not in MEMORY_PATH
    )


def _decode(model, frame, is_cond, plan, recipe, gen, gt, feats, pos, sizes, memory, video):
    """One frame's SAM2 decoding: prompts (conditioning frames), prediction, corrections.
    video: (index of the clip's first frame in the video, the video's frame count)."""
    point_inputs, mask_inputs = (
        _prompt_inputs(plan.kind, gt, recipe, gen) if is_cond else (None, None)
    )
    out, sam_out, high_res_features, pix_feat = model._track_step(
        video[0] + frame,
        is_cond,
        feats,
        pos,
        sizes,
        point_inputs,
        mask_inputs,
        memory,
        video[1],
        False,
        None,
    )
    steps = [Step(sam_out[1], sam_out[2], sam_out[6])]
    if frame in plan.correction_frames:
        ctx = (high_res_features, pix_feat, is_cond)
        steps, sam_out, point_inputs = _correct(
            model, steps[0], sam_out, gt, point_inputs, ctx, recipe.num_correction_clicks, gen
        )
    return out, sam_out, steps, point_inputs


def track(
    model,
    images: torch.Tensor,
    gt: torch.Tensor,
    obj_to_clip: torch.Tensor,
    plan: Plan,
    recipe: PromptRecipe,
    gen: torch.Generator,
    encoded=None,
    first_frame: int = 0,
    num_frames: int | None = None,
    predictor_memory: bool = False,
) -> list[FrameOutput]:
    """Run SAM2's video forward on all objects of a batch of clips.

    images (B, T, 3, S, S) normalized; gt (T, N, S, S) bool (only conditioning and
    correction frames are read); obj_to_clip (N,) clip index of each object; encoded:
    the image encoder's output for images.flatten(0, 1), if already computed.
    first_frame, num_frames: where the clip sits in a longer video that is tracked from a
    later frame (SAM2 places memories and object pointers by video frame index and
    length); by default the clip is the whole video.
    predictor_memory: keep memory as SAM2VideoPredictor does: a conditioning frame's encoded
    from its low-res mask upsampled (`propagate_in_video_preflight`), not from the decoder's
    full-res mask (for a mask prompt, the prompt itself) as SAM2's trainer does; memory
    features stored in bfloat16. Inference uses it.
    Returns one FrameOutput per frame, in frame order.
    """
    b, t = images.shape[:2]
    encoder_grad = not feature_cache.encoder_is_frozen(model)
    feats, pos, sizes = image_features(model, images.flatten(0, 1), encoder_grad, encoded)
    # only while training: under no_grad (evaluation) it gains nothing, and callers could
    # not modify the inference tensors it returns
    frozen_cond = torch.is_grad_enabled() and cond_decoding_is_frozen(model, feats)
    memory = {"cond_frame_outputs": {}, "non_cond_frame_outputs": {}}  # by video frame index
    video = (first_frame, t if num_frames is None else num_frames)
    outputs: dict[int, FrameOutput] = {}
    order = list(plan.cond_frames) + [f for f in range(t) if f not in plan.cond_frames]
    for frame in order:
        img_ids = obj_to_clip * t + frame  # this frame's image for each object
        cur_feats = [x[:, img_ids] for x in feats]
        # _track_step reads only the top level's position encoding: gather just that one
        # (the finest level's is 16x its size)
        cur_pos = [*pos[:-1], pos[-1][:, img_ids]]
        is_cond = frame in plan.cond_frames
        ctx = (plan, recipe, gen, memory, video, predictor_memory)
        # no later frame reads the memory of the last one: skip its memory encoder
        outputs[frame] = _step(
            model,
            ctx,
            frame,
            gt[frame],
            (cur_feats, cur_pos, sizes),
            encode_memory=frame != order[-1],
            inference=is_cond and frozen_cond,
        )
    return [outputs[f] for f in range(t)]


def _step(model, ctx, frame, gt, features, encode_memory, inference) -> FrameOutput:
    """One frame of `track`: decode it, encode its memory (unless `encode_memory` is
    false), store its output in the memory bank. ctx: (plan, recipe, gen, memory, video,
    predictor_memory) as in `track`; features: (feats, pos, sizes) of its N objects;
    inference: decode in inference mode, else in the caller's grad mode (not in
    inference_mode(False), which turns autograd back on under no_grad or inference mode:
    inference then built a graph through every frame's memory)."""
    plan, recipe, gen, memory, video, predictor_memory = ctx
    feats, pos, sizes = features
    is_cond = frame in plan.cond_frames
    with torch.inference_mode() if inference else contextlib.nullcontext():
        out, sam_out, steps, point_inputs = _decode(
            model, frame, is_cond, plan, recipe, gen, gt, feats, pos, sizes, memory, video
        )
    out["pred_masks"], out["pred_masks_high_res"], out["obj_ptr"] = sam_out[3:6]
    high_res = sam_out[4]
    if is_cond and predictor_memory:
        high_res = F.interpolate(
            sam_out[3], size=high_res.shape[-2:], mode="bilinear", align_corners=False
        )
    model._encode_memory_in_output(
        feats, sizes, point_inputs, encode_memory, high_res, sam_out[6], out
    )
    if predictor_memory and out["maskmem_features"] is not None:
        # SAM2VideoPredictor stores memory features in bfloat16, on any device
        out["maskmem_features"] = out["maskmem_features"].to(torch.bfloat16)
    bank = "cond_frame_outputs" if is_cond else "non_cond_frame_outputs"
    memory[bank][video[0] + frame] = out
    return FrameOutput(steps=steps, logits=sam_out[4], low_res_logits=sam_out[3])


# What SAM2Base._prepare_memory_conditioned_features reads of an earlier frame's output
MEMORY_KEYS = ("maskmem_features", "maskmem_pos_enc", "obj_ptr")


def memory_reach(model) -> int:
    """How many frames back an eval-mode SAM2 reads a non-conditioning frame's memory: its
    num_maskmem - 1 memories at temporal stride r reach 1 + r * (num_maskmem - 1) frames
    back at most, its object pointers max_obj_ptrs_in_encoder - 1 frames back."""
    stride = model.memory_temporal_stride_for_eval
    return max(1 + stride * (model.num_maskmem - 1), model.max_obj_ptrs_in_encoder - 1)


def track_video(
    model,
    features: Iterable[tuple],
    groups: Sequence[tuple[str, torch.Tensor]],
    recipe: PromptRecipe,
    gen: torch.Generator,
    first_frame: int,
    num_frames: int,
) -> Iterator[FrameOutput]:
    """`track` of one video for inference (`predictor_memory`), frame by frame, in memory
    that does not grow with the video: as SAM2VideoPredictor, each frame is encoded alone
    when it is reached, and the memory bank keeps of a frame only what later frames read
    (MEMORY_KEYS), and of a non-conditioning frame only while it is within `memory_reach`.

    features: `image_features` of the frames first_frame .. num_frames - 1 of the video,
    each encoded alone (a batch of one), read one frame at a time, when the frame is
    tracked (so several trackers can share one frame's encoding). groups: (kind, (N_k, S, S)
    bool masks) of objects prompted on frame first_frame, each group by its kind (mask,
    points or box; recipe: recipes.EVAL_PROMPTS). Each group's prompt frame is decoded
    alone, as `track` decodes it; after it all N = sum N_k objects are tracked as one
    batch, as the predictor batches a video's objects (rows stay independent; a larger
    batch may round the last bits differently). One group is exactly `track`. Yields each
    frame's FrameOutput (rows in group order); run it without autograd (inference or
    no_grad mode).
    """
    t = num_frames - first_frame
    first = torch.cat([masks for _, masks in groups])  # (N, S, S)
    ids = torch.zeros(first.shape[0], dtype=torch.long, device=first.device)
    memory = {"cond_frame_outputs": {}, "non_cond_frame_outputs": {}}
    plan, video = Plan(cond_frames=(0,), kind="mask"), (first_frame, num_frames)
    ctx = (plan, recipe, gen, memory, video, True)
    reach = memory_reach(model)
    for frame, (feats, pos, sizes) in enumerate(features):
        if frame == 0:
            out = _prompt_frame(model, groups, ctx, (feats, pos, sizes), t > 1)
        else:
            feats = [x[:, ids] for x in feats]
            pos = [*pos[:-1], pos[-1][:, ids]]
            out = _step(model, ctx, frame, first, (feats, pos, sizes), frame != t - 1, False)
        bank = memory["cond_frame_outputs" if frame == 0 else "non_cond_frame_outputs"]
        kept = bank[first_frame + frame]
        bank[first_frame + frame] = {k: kept[k] for k in MEMORY_KEYS}
        memory["non_cond_frame_outputs"].pop(first_frame + frame - reach, None)
        yield out


def _prompt_frame(model, groups, ctx, features, encode_memory: bool) -> FrameOutput:
    """track_video's first frame: each group decoded (and its memory encoded) with its own
    prompt kind, the results joined into one batch, rows in group order, in the memory bank
    (ctx's) as in the output; the output's steps are the groups' own, one after another."""
    plan, recipe, gen, memory, video, predictor_memory = ctx
    feats, pos, sizes = features
    outputs, stored = [], []
    for kind, masks in groups:
        ids = torch.zeros(masks.shape[0], dtype=torch.long, device=masks.device)
        own = {"cond_frame_outputs": {}, "non_cond_frame_outputs": {}}
        own_ctx = (Plan(cond_frames=(0,), kind=kind), recipe, gen, own, video, predictor_memory)
        group_features = ([x[:, ids] for x in feats], [*pos[:-1], pos[-1][:, ids]], sizes)
        outputs.append(_step(model, own_ctx, 0, masks, group_features, encode_memory, False))
        stored.append(own["cond_frame_outputs"][video[0]])
    memory["cond_frame_outputs"][video[0]] = {k: _join([s[k] for s in stored]) for k in MEMORY_KEYS}
    return FrameOutput(
        steps=[step for o in outputs for step in o.steps],  # multimask counts differ by kind
        logits=torch.cat([o.logits for o in outputs]),
        low_res_logits=torch.cat([o.low_res_logits for o in outputs]),
    )


def _join(values: list):
    """Batch-concatenate one memory field of several groups: a tensor, a list of tensors
    (maskmem_pos_enc), or None (the memory of a frame nothing reads)."""
    if values[0] is None:
        return None
    if isinstance(values[0], list):
        return [torch.cat(level) for level in zip(*values, strict=True)]
    return torch.cat(values)
