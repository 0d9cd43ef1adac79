"""pretrain.py and the pretrain pipeline (pretrain/dvc.yaml, stages/pretrain*.py)."""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from sam2_video import pretrain
from sam2_video.data.sources.synthetic import DOMAINS, render_scene
from sam2_video.model import build
from sam2_video.model.rollout import PROMPT_KINDS
from sam2_video.params import PretrainParams, load_pretrain_params

REPO = Path(__file__).resolve().parents[1]
SHORT = {"steps": 2, "stop_at": 2, "joint_steps": 2, "joint_restarts": 0, "val_every": 2}
QUICK = PretrainParams(**SHORT, clips=1, frames=2, image_objects=3, val_scenes=1)


def test_params_file_holds_the_defaults_and_dvc_yaml_lists_each_key():
    assert load_pretrain_params(REPO / "pretrain/params.yaml") == PretrainParams()
    stages = yaml.safe_load((REPO / "pretrain/dvc.yaml").read_text())["stages"]
    unused = {
        "video": {"joint_steps", "joint_restarts", "image_objects", "image_alike"},
        "joint": {"steps", "stop_at"},
    }
    unused["joint"].add("memory_attention_init")  # an init: the joint stage starts trained
    for name, stage in (("video", stages["pretrain"]), ("joint", stages["joint"])):
        expected = {f.name for f in dataclasses.fields(PretrainParams)} - unused[name]
        assert sorted(stage["params"]) == sorted(f"pretrain.{key}" for key in expected)
        # the default pipeline must never retrain the base as a side effect (dvc repro -f)
        assert stage["frozen"] is True


def test_bad_pretrain_params_name_the_file_and_key(tmp_path):
    path = tmp_path / "params.yaml"
    path.write_text("pretrain:\n  seed: 0\n  prob_mask: 0.5\n")
    with pytest.raises(ValueError, match=r"params.yaml: pretrain.prob_mask \+ prob_points"):
        load_pretrain_params(path)
    path.write_text("pretrain:\n  sed: 0\n")
    with pytest.raises(ValueError, match="params.yaml: unknown key.*pretrain.sed"):
        load_pretrain_params(path)


def test_memory_attention_init_reads_memory_at_the_same_position():
    """Queries and keys that carry no content: each position's output is the value stored
    at its own position (through RoPE), not a blend of all of them."""
    torch.manual_seed(0)
    model = build.build_model(build.load_model_config("tiny"))
    attention = model.memory_attention.layers[0].cross_attn_image
    side = 8  # 128 px / 16
    q = torch.zeros(1, side * side, attention.embedding_dim)
    k = torch.zeros(1, side * side, attention.kv_in_dim)
    v = torch.randn(1, side * side, attention.kv_in_dim)
    own = attention.out_proj(attention.v_proj(v))[0]  # (HW, C) each position's own value

    def nearest_is_own() -> float:
        with torch.no_grad():
            out = attention.eval()(q, k, v)[0]
        return float((torch.cdist(out, own).argmin(1) == torch.arange(side * side)).float().mean())

    before = nearest_is_own()
    pretrain.init_memory_attention(model, 3.0)
    assert before < 0.2 and nearest_is_own() > 0.9


def test_image_batches_supervise_every_object_shown():
    batch = pretrain.image_batch(np.random.default_rng(0), 3, 6)
    gt, owners = batch.gt, batch.obj_to_clip
    assert batch.frames.shape == (3, 1, 3, 128, 128) and gt.shape[:2] == (1, len(owners))
    assert gt.flatten(2).sum(-1).min() > 30  # no object too small to learn
    assert torch.equal(owners, owners.sort().values) and set(owners.tolist()) == {0, 1, 2}
    assert len(owners) > 9  # several objects an image: candidates cannot cover them all


def test_pretraining_repeats_exactly_and_keeps_the_global_generator():
    state = torch.random.get_rng_state()
    first, history = pretrain.pretrain(QUICK, report=lambda r: None)
    assert torch.equal(torch.random.get_rng_state(), state)
    second, _ = pretrain.pretrain(QUICK, report=lambda r: None)
    for (name, a), b in zip(first.state_dict().items(), second.state_dict().values(), strict=True):
        assert torch.equal(a, b), name
    assert [r["step"] for r in history] == [2]
    assert set(history[0]) >= {"source_jf_mask", "source_jf_points", "source_jf_box"}


def test_joint_stage_keeps_the_image_encoder_and_repeats_exactly():
    start, _ = pretrain.pretrain(QUICK, report=lambda r: None)
    encoder = {k: v.clone() for k, v in start.image_encoder.state_dict().items()}
    decoder = {k: v.clone() for k, v in start.sam_mask_decoder.state_dict().items()}
    runs = []
    for _ in range(2):
        model = build.build_model(build.load_model_config("tiny"))
        model.load_state_dict(start.state_dict())
        history = pretrain.joint(model, QUICK, report=lambda r: None)
        runs.append(model.state_dict())
        for key, value in model.image_encoder.state_dict().items():
            assert torch.equal(value, encoder[key]), key  # frozen: memory reads the same
        assert any(
            not torch.equal(v, decoder[k]) for k, v in model.sam_mask_decoder.state_dict().items()
        )
        assert all(p.requires_grad for p in model.parameters())  # handed back trainable
    for key, value in runs[0].items():
        assert torch.equal(value, runs[1][key]), key
    assert [(r["stage"], r["step"]) for r in history] == [("joint", 2)]
    assert set(history[0]) >= {"source_jf_mask", "source_jf_points", "source_jf_box"}


def test_joint_stage_runs_again_only_while_below_the_gate():
    """min_source_jf 1.0 is out of reach: the stage runs 1 + joint_restarts times, steps
    counted on; min_source_jf 0 passes at the first end: weights as without restarts."""
    start, _ = pretrain.pretrain(QUICK, report=lambda r: None)

    def joint(**changes):
        model = build.build_model(build.load_model_config("tiny"))
        model.load_state_dict(start.state_dict())
        history = pretrain.joint(model, dataclasses.replace(QUICK, **changes), lambda r: None)
        return model.state_dict(), [r["step"] for r in history]

    once, steps = joint(joint_restarts=0, min_source_jf=1.0)
    assert steps == [2]
    passed, steps = joint(joint_restarts=1, min_source_jf=0.0)
    assert steps == [2] and all(torch.equal(v, passed[k]) for k, v in once.items())
    again, steps = joint(joint_restarts=1, min_source_jf=1.0)
    assert steps == [2, 4] and any(not torch.equal(v, again[k]) for k, v in once.items())


def _run_stages(root: Path, *scripts: str, **params) -> subprocess.CompletedProcess:
    """Stage scripts as pretrain/dvc.yaml runs them, one after the other, in a copy laid
    out like the repo; the first failure, or the last result."""
    shutil.copytree(REPO / "stages", root / "stages")
    (root / "pretrain").mkdir()
    fields = dataclasses.asdict(dataclasses.replace(QUICK, **params))
    (root / "pretrain/params.yaml").write_text(yaml.safe_dump({"pretrain": fields}))
    env = {**os.environ, "PYTHONPATH": str(REPO / "src")}
    for script in scripts:
        cmd = [sys.executable, f"../stages/{script}"]
        done = subprocess.run(cmd, cwd=root / "pretrain", env=env, capture_output=True, text=True)
        if done.returncode:
            break
    return done


@pytest.mark.slow
def test_stage_below_min_source_jf_writes_nothing_and_says_why(tmp_path):
    done = _run_stages(tmp_path, "pretrain.py", min_source_jf=1.0)
    assert done.returncode == 1
    assert done.stderr.count("\n") == 1 and "below min_source_jf 1.0" in done.stderr
    assert list((tmp_path / "pretrain").iterdir()) == [tmp_path / "pretrain/params.yaml"]


@pytest.mark.slow
def test_joint_stage_without_the_video_stage_says_what_to_run(tmp_path):
    done = _run_stages(tmp_path, "pretrain_joint.py")
    assert done.returncode == 1
    assert done.stderr.count("\n") == 1 and "tiny_video.pt: not found" in done.stderr


@pytest.mark.slow
def test_stages_write_loadable_half_weights_and_metrics(tmp_path):
    done = _run_stages(tmp_path, "pretrain.py", "pretrain_joint.py", min_source_jf=0.0)
    assert done.returncode == 0, done.stderr
    for weights in (
        tmp_path / "pretrain/tiny_video.pt",
        tmp_path / "src/sam2_video/model/weights/tiny_base.pt",
    ):
        state = torch.load(weights)["model"]
        assert all(v.dtype == torch.float16 for v in state.values() if v.is_floating_point())
        build.load_checkpoint(build.build_model(build.load_model_config("tiny")), weights)
    for name, stage in (("video_metrics.json", None), ("metrics.json", "joint")):
        metrics = json.loads((tmp_path / "pretrain" / name).read_text())
        assert metrics["final"]["step"] == 2 and metrics["history"] == [metrics["final"]]
        assert metrics["final"].get("stage") == stage


def test_joint_stage_gate_rejects_a_base_that_ignores_clicks(tmp_path):
    """Seed 1's joint stage ended at mask 0.807, points 0.202, box 0.623 (docs/tiny_base.md):
    gated on the mask alone it passes, gated on every prompt kind it writes nothing."""
    p = dataclasses.replace(QUICK, min_source_jf=0.5)
    final = {
        "step": 800,
        "source_jf_mask": 0.807,
        "source_jf_points": 0.202,
        "source_jf_box": 0.623,
    }
    model = build.build_model(build.load_model_config("tiny"))
    weights, metrics = tmp_path / "base.pt", tmp_path / "metrics.json"
    pretrain.finish(model, [final], p, weights, metrics, Path("params.yaml"))
    assert weights.is_file() and metrics.is_file()
    weights.unlink(), metrics.unlink()
    with pytest.raises(ValueError, match=r"params.yaml: .* 0\.202 \(points prompt\) at step 800"):
        pretrain.finish(model, [final], p, weights, metrics, Path("params.yaml"), PROMPT_KINDS)
    assert not weights.exists() and not metrics.exists()


def test_alike_images_show_objects_of_one_colour_and_none_drawn_without_them():
    """`alike` 1: every image's objects share one colour; `alike` 0: the scenes the recipe
    always drew (the shipped base's), with no extra draw from the generator."""
    plain = pretrain.image_batch(np.random.default_rng(5), 2, 4, alike=0.0)
    rng = np.random.default_rng(5)
    drawn = [render_scene(rng, DOMAINS["source"], 1, 4, 128).frames for _ in range(2)]
    assert np.array_equal(plain.frames[:, 0].permute(0, 2, 3, 1).numpy(), np.stack(drawn)[:, 0])
    alike = pretrain.image_batch(np.random.default_rng(5), 2, 4, alike=1.0)
    for b in range(2):
        frame = alike.frames[b, 0].float()  # (3, H, W)
        objects = alike.gt[0, alike.obj_to_clip == b]  # (O, H, W) visible masks
        means = torch.stack([frame[:, m].mean(1) for m in objects if m.sum() > 30])
        assert len(means) > 1 and (means - means[0]).abs().max() < 30  # shading only
    colours = torch.stack(
        [plain.frames[0, 0].float()[:, m].mean(1) for m in plain.gt[0, plain.obj_to_clip == 0]]
    )
    assert (colours - colours[0]).abs().max() > 60  # other hues
