"""The CUDA paths: a train step with the default trainable set and every prompt kind (bf16),
evaluation, and a 2-process NCCL run of fit with validation. Skipped without CUDA (the
NCCL run without 2 GPUs); CPU runs of the same code are tests/test_fit.py's."""

from __future__ import annotations

import dataclasses

import fit_worker
import pytest
import torch
from test_fit import WORKER, _free_port

from sam2_video import fit
from sam2_video.data.loader import FixedClips, StepBatches
from sam2_video.evaluate import run
from sam2_video.model import build, rollout
from sam2_video.params import EvaluateParams, defaults

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device"),
]


def _default_trainable_settings():
    """fit_worker's settings with params.yaml's trainable modules, all three prompt kinds
    and correction clicks, bf16 autocast."""
    s = fit_worker.settings(steps=2, batch=2)
    train = dataclasses.replace(
        s.train,
        trainable_modules=defaults().train.trainable_modules,
        prob_mask=0.34,
        prob_points=0.33,
        prob_box=0.33,
        num_correction_clicks=2,
        amp=True,
    )
    return dataclasses.replace(s, train=train)


def test_train_step_with_the_default_trainable_set_and_every_prompt_kind_on_cuda(tmp_path):
    s = _default_trainable_settings()
    clips = fit_worker.make_clips(4)
    model = fit_worker.tiny_model()
    build.set_trainable(model, s.train.trainable_modules)
    model.to("cuda").train()
    t = s.train
    forward = fit.ClipForward(
        model, t.prompts(), t.losses(), predictor_memory=t.memory_as_predictor
    )
    batch = StepBatches(FixedClips(clips), 2, 64, 0, 0, 1, steps=1)[0].to("cuda")
    for kind in ("mask", "points", "box"):
        model.zero_grad(set_to_none=True)
        corrections = (0,) if kind != "mask" else ()
        plan = rollout.Plan(cond_frames=(0,), kind=kind, correction_frames=corrections)
        with torch.autocast("cuda", dtype=torch.bfloat16):
            parts = forward(batch, plan, torch.Generator().manual_seed(0), 2.0)
        assert torch.isfinite(parts["total"]), kind
        parts["total"].backward()
        for name, w in model.named_parameters():
            if w.requires_grad:
                assert w.grad is not None and torch.isfinite(w.grad).all(), (kind, name)

    fresh = fit_worker.tiny_model()
    build.set_trainable(fresh, s.train.trainable_modules)
    start = fit.trainable_state(fresh)
    cuda = torch.device("cuda")
    summary = fit.fit(fresh, FixedClips(clips), clips[:1], s, tmp_path / "r.pt", None, cuda, "x")
    assert summary["steps"] == 2 and 0.0 <= summary["best_val_jf"] <= 1.0, summary
    end = fit.trainable_state(fresh)
    assert any(not torch.equal(start[k], end[k]) for k in start)


def test_evaluation_on_cuda_scores_as_on_cpu(tmp_path):
    cfg_path, weights = tmp_path / "tiny.yaml", build.tiny_base_weights_path()
    build.save_model_config(build.load_model_config("tiny"), cfg_path)
    clips = fit_worker.make_clips(2)
    p = dataclasses.replace(EvaluateParams(), prompts=("mask", "points", "box"))
    scores = {}
    for device in ("cpu", "cuda"):
        model, size = run.load_model(cfg_path, weights, device)
        assert {w.device.type for w in model.parameters()} == {device}
        models = {"finetuned": model, "base": model}
        scores[device] = run.score_models(models, clips, p, size, device)
    for prompt in p.prompts:
        cpu = run.headline_metrics(scores["cpu"], p.prompts)[f"jf_{prompt}"]
        gpu = run.headline_metrics(scores["cuda"], p.prompts)[f"jf_{prompt}"]
        assert abs(cpu - gpu) < 0.1, (prompt, cpu, gpu)  # bf16 autocast, TF32: not bit-equal


@pytest.mark.slow
@pytest.mark.skipif(torch.cuda.device_count() < 2, reason="needs 2 CUDA devices")
def test_two_process_nccl_ddp_trains_and_validates(tmp_path):
    """fit under torchrun on 2 GPUs (NCCL): collectives on each rank's own GPU, validation
    broadcast from rank 0 (the CPU tensor broadcast of issue 27 crashed here)."""
    import os
    import subprocess
    import sys

    out, checkpoint = tmp_path / "two.pt", tmp_path / "c.pt"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2"]
    cmd += ["--master_port", str(_free_port()), str(WORKER), str(out), "3", "1"]
    cmd += [str(checkpoint), "cuda"]
    done = subprocess.run(cmd, env=dict(os.environ, OMP_NUM_THREADS="1"), capture_output=True)
    assert done.returncode == 0, done.stderr.decode()[-3000:]
    trained = torch.load(out)
    start = fit.trainable_state(fit_worker.tiny_model())
    assert max((trained[k] - start[k]).abs().max().item() for k in start) > 1e-4
    state = torch.load(checkpoint, weights_only=True)["run"]
    assert state["step"] == 3 and any("val/jf" in r for r in state["history"])
