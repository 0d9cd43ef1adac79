"""pretrain_tiny: a run that ends on the plateau refuses to overwrite the shipped weights."""

from __future__ import annotations

import pytest

from sam2_video.model import pretrain_tiny


@pytest.mark.slow
def test_run_left_on_the_plateau_writes_no_weights(tmp_path):
    out = tmp_path / "tiny_base.pt"
    args = ["--steps", "2", "--stop-at", "2", "--val-every", "2", "--val-scenes", "1"]
    args += ["--out", str(out)]
    with pytest.raises(SystemExit, match="plateau") as err:
        pretrain_tiny.main(args)
    assert str(out) in str(err.value) and not out.exists()
