"""Sources stored as shards in a test's folder, read back with the reader."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from pathlib import Path

from sam2_video.data import shards
from sam2_video.params import ShardParams


def shard_params(**overrides) -> ShardParams:
    """The shard defaults, one worker, with `overrides`."""
    return dataclasses.replace(ShardParams(workers=1), **overrides)


def store(sources: Sequence, out: Path, **overrides) -> shards.ShardReader:
    """Shard `sources` into `out` with shard_params(**overrides); a reader of the result."""
    shards.build_split(sources, out, shard_params(**overrides))
    return shards.ShardReader(out)
