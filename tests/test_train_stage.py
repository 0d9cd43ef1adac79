"""The train stage's outputs exist whatever the step count (`train.steps: 0` included)."""

from __future__ import annotations

import yaml
from dvc_project import REPO, load_stage


def train_stage():
    return load_stage("train")


def test_the_curves_the_stage_guarantees_are_the_ones_dvc_yaml_plots():
    plotted = set()
    for plot in yaml.safe_load((REPO / "dvc.yaml").read_text())["plots"]:
        for spec in plot.values() if isinstance(plot, dict) else []:
            for path in spec.get("y", {}) if isinstance(spec.get("y"), dict) else []:
                if path.startswith("dvclive/train/plots/metrics/"):
                    plotted.add(
                        path.removeprefix("dvclive/train/plots/metrics/").removesuffix(".tsv")
                    )
    assert plotted == set(train_stage().CURVES)


def test_empty_curves_are_header_only_and_logged_ones_are_kept(tmp_path):
    stage = train_stage()
    (tmp_path / "val").mkdir()
    (tmp_path / "val" / "jf.tsv").write_text("step\tjf\n0\t0.5\n")
    stage.write_empty_curves(tmp_path, ("train/loss", "val/jf"))
    assert (tmp_path / "train" / "loss.tsv").read_text() == "step\tloss\n"
    assert (tmp_path / "val" / "jf.tsv").read_text() == "step\tjf\n0\t0.5\n"
