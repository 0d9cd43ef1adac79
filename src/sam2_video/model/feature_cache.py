"""Frozen image-encoder outputs kept per clip of video frames, so later visits skip the encoder.

While only the memory modules train, the image encoder is frozen: a clip's encoder output
is then a pure function of its frames, which their keys name (`Clip.frame_keys`: source
and frame index), so the key of an entry is the clip's tuple of frame keys (a video
window). SAM2's trainer recomputes it at every visit anyway; here the first visit computes
and keeps it and every later visit of the same window reads it back (the default run draws
each window ~25 times). Pseudo-video frames are made anew at every visit (a new motion):
their clips have no keys and are encoded every time, uncached.

Each clip is always encoded on its own, as one (T, 3, S, S) batch, whether it is cached or
not: a cache hit returns exactly the tensors a miss would compute, so a resumed run (cold
cache) trains bit-identically to an uninterrupted one (warm cache). (Frames are not cached
one by one: encoding them singly multiplies the encoder's operator calls by T, and a frame
encoded within different batches need not give the same bits.)

Of the position encodings only the top level's is kept (the finer levels' shapes are
all SAM2 reads of them: see _share_position_encodings).

When the mask decoder's high-resolution projections (conv_s0/s1) are frozen as well, the
cache keeps their output instead of the two finest encoder levels (as SAM2Base.forward_image
does before its clicks): a hit skips them too, and the finest level shrinks 8x (64 -> 8
channels in the tiny model).
"""

from __future__ import annotations

from collections import OrderedDict

import torch

Encoded = dict[str, torch.Tensor | list[torch.Tensor]]  # SAM2 ImageEncoder.forward output
# Encoded key of backbone_fpn with the decoder's conv_s0/s1 applied to its two finest levels
# (SAM2Base.forward_image's backbone_fpn); present instead of "backbone_fpn"
SAM_FPN = "sam_fpn"


def encoder_is_frozen(model: torch.nn.Module) -> bool:
    return not any(p.requires_grad for p in model.image_encoder.parameters())


def high_res_projections(model: torch.nn.Module) -> list[torch.nn.Module]:
    """The mask decoder's convs on the two finest levels (none if the model skips them)."""
    if not model.use_high_res_features_in_sam:
        return []
    return [model.sam_mask_decoder.conv_s0, model.sam_mask_decoder.conv_s1]


def projections_are_frozen(model: torch.nn.Module) -> bool:
    return not any(p.requires_grad for m in high_res_projections(model) for p in m.parameters())


def project_fpn(model: torch.nn.Module, fpn: list[torch.Tensor]) -> list[torch.Tensor]:
    """backbone_fpn levels as the mask decoder reads them (SAM2Base.forward_image)."""
    convs = high_res_projections(model)
    return [conv(x) for conv, x in zip(convs, fpn, strict=False)] + list(fpn[len(convs) :])


def _tensors(out: Encoded) -> list[torch.Tensor]:
    return [v for value in out.values() for v in (value if isinstance(value, list) else [value])]


def _nbytes(out: Encoded) -> int:
    """Bytes held, each storage counted once (vision_features is a backbone_fpn level)."""
    storages = {t.untyped_storage().data_ptr(): t.untyped_storage().nbytes() for t in _tensors(out)}
    return sum(storages.values())


def _share_position_encodings(out: Encoded) -> Encoded:
    """The top level's position encoding, one frame's copy when all frames' are equal; the
    finer levels' as shape-only placeholders.

    SAM2's sine encodings depend on the feature-map shape only: storing them per frame would
    double the cache for nothing (checked, not assumed, so another encoder stays correct).
    Of the finer levels SAM2Base reads the shape only (_prepare_backbone_features takes
    feat_sizes from it; _track_step and the memory path read the top level's encoding):
    a zero expanded to that shape holds 1 value instead of the finest level's C*H*W.
    """
    *finer, top = out["vision_pos_enc"]  # (T, C, H, W) each
    first = top[:1]
    if torch.equal(top, first.expand_as(top)):
        top = first.clone().expand_as(top)
    placeholders = [pe.new_zeros(()).expand(pe.shape) for pe in finer]
    return {**out, "vision_pos_enc": [*placeholders, top]}


def _one_frame(shared: torch.Tensor) -> torch.Tensor:
    """What a tensor expanded over frames holds: one frame, or one value for a placeholder
    (every stride 0)."""
    return shared.reshape(-1)[:1] if not any(shared.stride()) else shared[:1]


def _join(parts: list[torch.Tensor]) -> torch.Tensor:
    """torch.cat along dim 0, except that per-frame copies of one shared tensor (see
    _share_position_encodings) stay one shared tensor instead of being copied out."""
    first = parts[0]
    shared = all(p.stride(0) == 0 and p.shape[1:] == first.shape[1:] for p in parts) and all(
        torch.equal(_one_frame(p), _one_frame(first)) for p in parts[1:]
    )
    if shared:
        return first[:1].expand(sum(p.shape[0] for p in parts), *first.shape[1:])
    return torch.cat(parts)


def concat(outputs: list[Encoded]) -> Encoded:
    """Join per-clip encoder outputs along the image axis (clip-major, as images.flatten)."""
    joined: Encoded = {}
    for key, first in outputs[0].items():
        if isinstance(first, list):
            joined[key] = [_join([o[key][i] for o in outputs]) for i in range(len(first))]
        else:
            joined[key] = _join([o[key] for o in outputs])
    return joined


def encode_clip(model: torch.nn.Module, frames: torch.Tensor) -> Encoded:
    """SAM2's image features for one clip's (T, 3, S, S) frames, without autograd.

    The image-encoder output, with the frozen decoder projections applied (key SAM_FPN)
    when conv_s0/s1 are frozen; with them trainable, the raw levels ("backbone_fpn").
    """
    with torch.no_grad():
        out = model.image_encoder(frames)
        if not projections_are_frozen(model):
            return out
        return {
            "vision_pos_enc": out["vision_pos_enc"],
            SAM_FPN: project_fpn(model, out["backbone_fpn"]),
        }


class EncoderCache:
    """Least-recently-used encoder outputs by clip frame keys, at most `max_bytes` in all.

    Only for a frozen encoder: the caller guarantees that a frame key always stands for
    the same pixels.
    """

    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = max_bytes
        self.entries: OrderedDict[tuple[str, ...], Encoded] = OrderedDict()
        self.bytes = 0
        self.hits = self.misses = 0

    def encode(
        self, model: torch.nn.Module, images: torch.Tensor, keys: list[tuple[str, ...] | None]
    ) -> Encoded:
        """Encoder output for (B, T, 3, S, S) images whose clips' frames have `keys` (None:
        not cached), as for images.flatten(0, 1)."""
        pairs = zip(images, keys, strict=True)
        return concat([self._clip(model, frames, frame_keys) for frames, frame_keys in pairs])

    def _clip(
        self, model: torch.nn.Module, frames: torch.Tensor, key: tuple[str, ...] | None
    ) -> Encoded:
        if key is None:
            return _share_position_encodings(encode_clip(model, frames))
        if key in self.entries:
            self.hits += 1
            self.entries.move_to_end(key)
            return self.entries[key]
        self.misses += 1
        out = _share_position_encodings(encode_clip(model, frames))
        size = _nbytes(out)
        if size <= self.max_bytes:
            self.entries[key] = out
            self.bytes += size
            while self.bytes > self.max_bytes:
                _, dropped = self.entries.popitem(last=False)
                self.bytes -= _nbytes(dropped)
        return out

    def stats(self) -> dict[str, float]:
        seen = self.hits + self.misses
        hit_rate = self.hits / seen if seen else 0.0
        return {
            "hit_rate": hit_rate,
            "cached_clips": len(self.entries),
            "megabytes": self.bytes / 2**20,
        }
