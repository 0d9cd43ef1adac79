import dataclasses

import torch
from conftest import square_masks

from sam2_video.model import build, rollout
from sam2_video.model.feature_cache import (
    SAM_FPN,
    EncoderCache,
    concat,
    encode_clip,
    encoder_is_frozen,
    projections_are_frozen,
)
from sam2_video.model.recipes import TINY_PROMPTS


def _images(clips: int, frames: int = 3, seed: int = 0) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    return torch.randn((clips, frames, 3, 128, 128), generator=gen)  # (B, T, 3, S, S)


def _keys(*clips: str, frames: int = 3) -> list[tuple[str, ...]]:
    """Frame keys of clips that are windows of a video each (`Clip.frame_keys`)."""
    return [tuple(f"{clip}/{t:05d}" for t in range(frames)) for clip in clips]


def _flat(encoded) -> list[torch.Tensor]:
    """What SAM2 reads of an encoder output: features, and the top level's position encoding."""
    return [encoded["vision_features"], encoded["vision_pos_enc"][-1], *encoded["backbone_fpn"]]


def test_a_hit_returns_exactly_what_a_miss_computed_in_batch_order(tiny_model):
    tiny_model.eval()
    images = _images(2)
    cache = EncoderCache(max_bytes=2**30)
    first = cache.encode(tiny_model, images, _keys("a", "b"))
    again = cache.encode(tiny_model, images, _keys("a", "b"))
    assert (cache.hits, cache.misses) == (2, 2)
    for x, y in zip(_flat(first), _flat(again), strict=True):
        assert torch.equal(x, y)
    # clip-major order, as images.flatten(0, 1); per-clip batches equal one big batch
    with torch.no_grad():
        whole = tiny_model.image_encoder(images.flatten(0, 1))
    for x, y in zip(_flat(first), _flat(whole), strict=True):
        torch.testing.assert_close(x, y, atol=1e-5, rtol=1e-5)
    assert not first["vision_features"].requires_grad


def test_least_recently_used_clip_is_dropped_at_the_byte_limit(tiny_model):
    images = _images(1)
    probe = EncoderCache(max_bytes=2**30)
    probe.encode(tiny_model, images, _keys("probe"))
    one_clip = probe.bytes
    # the encoder's outputs, with vision_features (= the last fpn level) and all frames'
    # equal top-level position encodings counted once; the finer levels' placeholders: 1 value
    enc = encode_clip(tiny_model, images[0])
    fpn = sum(t.numel() * 4 for t in enc["backbone_fpn"])
    *finer, top = enc["vision_pos_enc"]
    pos = top[:1].numel() * 4 + len(finer) * 4
    assert one_clip == fpn + pos
    cache = EncoderCache(max_bytes=2 * one_clip)
    for name in ("a", "b", "a", "c"):  # "a" is used again, so "b" is the oldest when "c" comes
        cache.encode(tiny_model, images, _keys(name))
    assert list(cache.entries) == [*_keys("a"), *_keys("c")]
    assert cache.bytes == 2 * one_clip
    assert (cache.hits, cache.misses) == (1, 3)
    assert cache.stats()["hit_rate"] == 0.25

    too_small = EncoderCache(max_bytes=one_clip - 1)  # nothing fits: compute, keep nothing
    too_small.encode(tiny_model, images, _keys("a"))
    assert too_small.entries == {} and too_small.bytes == 0


def test_clips_without_frame_keys_are_encoded_every_time_and_not_kept(tiny_model):
    images = _images(2)
    cache = EncoderCache(max_bytes=2**30)
    keys = [None, *_keys("b")]
    first = cache.encode(tiny_model, images, keys)
    again = cache.encode(tiny_model, images, keys)
    assert (cache.hits, cache.misses) == (1, 1) and list(cache.entries) == _keys("b")
    for x, y in zip(_flat(first), _flat(again), strict=True):
        assert torch.equal(x, y)


def test_track_on_cached_encoder_output_equals_track_encoding_itself(tiny_model):
    build.set_trainable(tiny_model, ["memory_attention", "memory_encoder"])
    assert encoder_is_frozen(tiny_model)
    tiny_model.eval()
    images, gt = _images(1, frames=4), square_masks(4, 2)
    owners = torch.zeros(2, dtype=torch.long)
    plan, recipe = rollout.Plan(cond_frames=(0,), kind="mask"), TINY_PROMPTS
    encoded = EncoderCache(2**30).encode(tiny_model, images, _keys("clip", frames=images.shape[1]))
    with torch.no_grad():
        direct = rollout.track(tiny_model, images, gt, owners, plan, recipe, torch.Generator())
        cached = rollout.track(
            tiny_model, images, gt, owners, plan, recipe, torch.Generator(), encoded
        )
    for d, c in zip(direct, cached, strict=True):
        torch.testing.assert_close(d.logits, c.logits, atol=1e-4, rtol=1e-4)
    # the cached dict is read, not modified
    again = EncoderCache(2**30).encode(tiny_model, images, _keys("clip", frames=images.shape[1]))
    for x, y in zip(encoded[SAM_FPN], again[SAM_FPN], strict=True):
        assert torch.equal(x, y)


def test_frozen_decoder_projections_are_cached_as_forward_image_applies_them(tiny_model):
    build.set_trainable(tiny_model, ["memory_attention", "memory_encoder"])
    assert projections_are_frozen(tiny_model)
    images = _images(2)
    cache = EncoderCache(max_bytes=2**30)
    first = cache.encode(tiny_model, images, _keys("a", "b"))
    again = cache.encode(tiny_model, images, _keys("a", "b"))
    assert (cache.hits, cache.misses) == (2, 2) and "backbone_fpn" not in first
    with torch.no_grad():
        whole = tiny_model.forward_image(images.flatten(0, 1))  # SAM2's own projection
    d_model = tiny_model.image_encoder.neck.d_model
    assert whole["backbone_fpn"][0].shape[1] < d_model  # conv_s0 did project the level
    top = [enc["vision_pos_enc"][-1] for enc in (first, again, whole)]  # the one read
    for x, y, z in [*zip(first[SAM_FPN], again[SAM_FPN], whole["backbone_fpn"], strict=True), top]:
        assert torch.equal(x, y)
        torch.testing.assert_close(x, z, atol=1e-5, rtol=1e-5)
    # the shared position encodings of the two clips stay one tensor, not a copy per frame
    assert all(pe.stride(0) == 0 for pe in first["vision_pos_enc"])


def test_trainable_decoder_projections_get_raw_levels_and_gradients(tiny_model):
    build.set_trainable(tiny_model, ["memory_attention", "sam_mask_decoder"])
    assert encoder_is_frozen(tiny_model) and not projections_are_frozen(tiny_model)
    images = _images(1)
    encoded = EncoderCache(2**30).encode(tiny_model, images, _keys("clip", frames=images.shape[1]))
    assert encoded["backbone_fpn"][0].shape[1] == tiny_model.image_encoder.neck.d_model
    feats, _, _ = rollout.image_features(tiny_model, images[0], False, encoded)
    feats[0].sum().backward()  # the decoder reads conv_s0's output, with its graph
    assert tiny_model.sam_mask_decoder.conv_s0.weight.grad.abs().sum() > 0


def test_finer_position_encodings_are_kept_as_shapes_and_tracking_is_bit_identical(tiny_model):
    """Only the top level's position encoding is read (rollout.track, SAM2's _track_step):
    the finer levels become zero-storage placeholders of the same shape, and tracking on
    them gives the very same bits as on the full encodings."""
    build.set_trainable(tiny_model, ["memory_attention", "memory_encoder"])
    images, gt = _images(2, frames=3), square_masks(3, 2)
    owners = torch.tensor([0, 1])
    cache = EncoderCache(2**30)
    cached = cache.encode(tiny_model, images, _keys("a", "b"))
    full = concat([encode_clip(tiny_model, clip) for clip in images])
    assert len(full["vision_pos_enc"]) > 1  # the tiny model has finer levels
    for kept, ref in zip(cached["vision_pos_enc"][:-1], full["vision_pos_enc"][:-1], strict=True):
        assert kept.shape == ref.shape and not any(kept.stride())
        assert kept.untyped_storage().nbytes() == kept.element_size()
    assert torch.equal(cached["vision_pos_enc"][-1], full["vision_pos_enc"][-1])
    recipe = dataclasses.replace(TINY_PROMPTS, num_correction_clicks=1)
    for kind in ("mask", "points"):
        plan = rollout.Plan(cond_frames=(0,), kind=kind, correction_frames=(0,)[: kind != "mask"])
        runs = []
        for encoded in (full, cached):
            gen = torch.Generator().manual_seed(1)
            runs.append(rollout.track(tiny_model, images, gt, owners, plan, recipe, gen, encoded))
            sum(f.logits.sum() for f in runs[-1]).backward()
        for a, b in zip(*runs, strict=True):
            assert torch.equal(a.logits, b.logits)
