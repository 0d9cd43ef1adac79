import dataclasses

import pytest
import torch
from conftest import square_masks

from sam2_video.model import build, losses, rollout
from sam2_video.model.recipes import SAM21_MOSE_LOSSES, SAM21_MOSE_PROMPTS, TINY_PROMPTS


def _batch(t=3):
    images = torch.randn(2, t, 3, 128, 128, generator=torch.Generator().manual_seed(0))
    gt = square_masks(t, 3)
    return images, gt, torch.tensor([0, 0, 1])


@pytest.mark.parametrize("kind,clicks", [("mask", 0), ("points", 0), ("box", 0), ("points", 2)])
def test_each_prompt_type_gives_finite_loss_and_grads_only_on_trainable(tiny_model, kind, clicks):
    build.set_trainable(tiny_model, ["memory_attention", "memory_encoder"])
    tiny_model.train()
    images, gt, owners = _batch()
    recipe = dataclasses.replace(TINY_PROMPTS, num_correction_clicks=clicks)
    plan = rollout.Plan((0,), kind, (0,) if clicks else ())
    frames = rollout.track(tiny_model, images, gt, owners, plan, recipe, torch.Generator())
    assert len(frames) == 3 and len(frames[0].steps) == 1 + clicks
    parts = losses.clip_losses(frames, gt, SAM21_MOSE_LOSSES)
    assert torch.isfinite(parts["total"])
    parts["total"].backward()
    for name, p in tiny_model.named_parameters():
        top = name.split(".")[0]
        if top in ("memory_attention", "memory_encoder"):
            continue
        assert p.grad is None, f"frozen parameter {name} received a gradient"
    grads = [p.grad for p in tiny_model.memory_attention.parameters()]
    assert any(g is not None and g.abs().sum() > 0 for g in grads)


def test_frozen_image_encoder_builds_no_graph(tiny_model):
    build.set_trainable(tiny_model, ["memory_attention"])
    images = torch.randn(2, 3, 128, 128)
    feats, _, _ = rollout.image_features(tiny_model, images, encoder_grad=False)
    assert not feats[-1].requires_grad  # top level: encoder only
    assert feats[0].grad_fn is None  # conv_s0 is frozen too here


def test_sample_plan_respects_probabilities_and_cond_frames():
    # SAM2.1's (1 or 2 conditioning frames, correction clicks), boxes only
    boxes = dataclasses.replace(SAM21_MOSE_PROMPTS, prob_mask=0.0, prob_points=0.0, prob_box=1.0)
    gen = torch.Generator().manual_seed(0)
    plans = [rollout.sample_plan(5, boxes, gen) for _ in range(20)]
    assert {p.kind for p in plans} == {"box"}
    assert all(p.cond_frames[0] == 0 and len(p.cond_frames) in (1, 2) for p in plans)
    assert {len(p.cond_frames) for p in plans} == {1, 2}
    assert all(p.correction_frames == p.cond_frames for p in plans)


def _memory_grads(model, kind, clicks):
    images, gt, owners = _batch(t=4)
    recipe = dataclasses.replace(TINY_PROMPTS, num_correction_clicks=clicks)
    plan = rollout.Plan((0,), kind, (0,) if clicks else ())
    torch.manual_seed(1)  # the same dropout draws in both runs
    gen = torch.Generator().manual_seed(2)
    frames = rollout.track(model, images, gt, owners, plan, recipe, gen)
    losses.clip_losses(frames, gt, SAM21_MOSE_LOSSES)["total"].backward()
    grads = {n: p.grad for n, p in model.named_parameters() if n.startswith("memory_")}
    return frames[0].logits.is_inference(), grads


@pytest.mark.parametrize("kind,clicks", [("mask", 0), ("points", 2)])
def test_conditioning_frames_decoded_without_autograd_give_the_same_gradients(
    tiny_cfg, kind, clicks
):
    fast, slow = (build.build_model(tiny_cfg) for _ in range(2))
    slow.load_state_dict(fast.state_dict())
    for model in (fast, slow):
        build.set_trainable(model, ["memory_attention", "memory_encoder"])
        model.train()
    slow.obj_ptr_proj.requires_grad_(True)  # a trained decoding weight: autograd throughout
    fast_inference, fast_grads = _memory_grads(fast, kind, clicks)
    slow_inference, slow_grads = _memory_grads(slow, kind, clicks)
    assert (fast_inference, slow_inference) == (True, False)  # the two paths were taken
    assert slow.obj_ptr_proj.layers[0].weight.grad is not None
    assert fast_grads.keys() == slow_grads.keys()
    for name, grad in fast_grads.items():
        assert torch.equal(grad, slow_grads[name]), name
