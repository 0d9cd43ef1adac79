import dataclasses

import fit_worker
import pytest

from sam2_video import fit
from sam2_video.data.loader import FixedClips
from sam2_video.params import Params


def settings(steps=100, lr=1e-3, warmup_steps=10) -> Params:
    base = fit_worker.settings(steps=steps, batch=2)
    return dataclasses.replace(
        base,
        lr=lr,
        train=dataclasses.replace(base.train, warmup_steps=warmup_steps, min_lr_ratio=0.1),
    )


def test_lr_schedule_warms_up_linearly_then_decays_to_the_floor():
    s = settings().train
    assert fit.lr_factor(0, s) == pytest.approx(0.1)
    assert fit.lr_factor(9, s) == pytest.approx(1.0)
    assert fit.lr_factor(10, s) == pytest.approx(1.0)
    assert fit.lr_factor(55, s) == pytest.approx(0.1 + 0.9 * 0.5)  # half-way: cos = 0
    assert fit.lr_factor(100, s) == pytest.approx(0.1)


def test_step_generators_differ_by_step_and_rank_but_repeat():
    draw = lambda seed, step, rank: fit.step_generator(seed, step, rank).initial_seed()  # noqa: E731
    assert draw(0, 1, 0) == draw(0, 1, 0)
    assert len({draw(0, 1, 0), draw(0, 2, 0), draw(0, 1, 1), draw(1, 1, 0)}) == 4


def test_fingerprint_changes_with_any_setting():
    assert fit.fingerprint(settings()) == fit.fingerprint(settings())
    assert fit.fingerprint(settings()) != fit.fingerprint(settings(lr=2e-3))
    assert fit.fingerprint(settings()) != fit.fingerprint(settings(warmup_steps=3))
    assert fit.fingerprint(settings(), "a") != fit.fingerprint(settings(), "b")


# -- real training runs ---------------------------------------------------------------------
import os  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
from pathlib import Path  # noqa: E402

import torch  # noqa: E402

WORKER = Path(__file__).with_name("fit_worker.py")


def _free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _run_worker(args: list[str], nproc: int) -> None:
    env = dict(os.environ, OMP_NUM_THREADS="1")
    cmd = [sys.executable, str(WORKER), *args]
    if nproc > 1:
        cmd = [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--nproc_per_node",
            str(nproc),
            "--master_port",
            str(_free_port()),
            str(WORKER),
            *args,
        ]
    subprocess.run(cmd, check=True, env=env, capture_output=True, timeout=300)


@pytest.mark.slow
def test_two_process_gloo_ddp_equals_one_process_on_the_same_global_batch(tmp_path):
    _run_worker([str(tmp_path / "one.pt"), "3", "2", str(tmp_path / "c1.pt")], nproc=1)
    _run_worker([str(tmp_path / "two.pt"), "3", "1", str(tmp_path / "c2.pt")], nproc=2)
    one, two = torch.load(tmp_path / "one.pt"), torch.load(tmp_path / "two.pt")
    start = fit.trainable_state(__import__("fit_worker").tiny_model())
    moved = max((one[k] - start[k]).abs().max().item() for k in one)
    assert moved > 1e-4  # the weights did train
    for k in one:
        torch.testing.assert_close(one[k], two[k], rtol=1e-4, atol=1e-5, msg=k)


def test_interrupted_run_resumes_to_the_same_weights(tmp_path):
    import fit_worker

    class FailingAfter(FixedClips):
        """Clips that raise once `limit` were drawn: a crash in the middle of training."""

        def __init__(self, clips, limit):
            super().__init__(clips)
            self.left = limit

        def training_clip(self, index, rng):
            self.left -= 1
            if self.left < 0:
                raise RuntimeError("simulated kill")
            return super().training_clip(index, rng)

    s = fit_worker.settings(steps=4, batch=2)
    clips = fit_worker.make_clips(4)
    ref = fit_worker.tiny_model()
    fit.fit(
        ref, FixedClips(clips), clips[:1], s, tmp_path / "ref.pt", None, torch.device("cpu"), "x"
    )
    model = fit_worker.tiny_model()
    with pytest.raises(RuntimeError, match="simulated kill"):
        fit.fit(
            model,
            FailingAfter(clips, 5),
            clips[:1],
            s,
            tmp_path / "r.pt",
            None,
            torch.device("cpu"),
            "x",
        )
    assert torch.load(tmp_path / "r.pt", weights_only=True)["run"]["step"] == 2
    resumed = fit_worker.tiny_model()
    fit.fit(
        resumed, FixedClips(clips), clips[:1], s, tmp_path / "r.pt", None, torch.device("cpu"), "x"
    )
    for k, v in fit.trainable_state(ref).items():
        assert torch.equal(v, fit.trainable_state(resumed)[k]), k


def test_param_groups_carry_per_module_lr_factors(tiny_model):
    from sam2_video.model import build

    build.set_trainable(tiny_model, ["memory_attention", "memory_encoder"])
    groups = fit.param_groups(tiny_model, {"memory_encoder": 0.5})
    assert [(g["name"], g["scale"]) for g in groups] == [
        ("memory_attention", 1.0),
        ("memory_encoder", 0.5),
    ]
    assert sum(len(g["params"]) for g in groups) == sum(
        p.requires_grad for p in tiny_model.parameters()
    )


def test_feature_cache_trains_like_encoding_every_step(tmp_path):
    import fit_worker

    clips = fit_worker.make_clips(2)  # batch 2 of 2 clips: every step after the first hits
    results = {}
    for cache_mb in (0, 64):
        model = fit_worker.tiny_model()
        s = fit_worker.settings(steps=3, batch=2, feature_cache_mb=cache_mb)
        summary = fit.fit(
            model,
            FixedClips(clips),
            None,  # no validation: the last step's weights are compared
            s,
            tmp_path / f"{cache_mb}.pt",
            None,
            torch.device("cpu"),
            "x",
        )
        results[cache_mb] = (fit.trainable_state(model), summary)
    assert "feature_cache" not in results[0][1]
    assert results[64][1]["feature_cache"]["hit_rate"] == round(4 / 6, 3)  # 2 misses, 4 hits
    start = fit.trainable_state(fit_worker.tiny_model())
    uncached, cached = results[0][0], results[64][0]
    assert max((uncached[k] - start[k]).abs().max().item() for k in start) > 1e-4
    for k in uncached:  # per-clip vs whole-batch encoding: equal up to float rounding
        torch.testing.assert_close(cached[k], uncached[k], rtol=1e-4, atol=1e-5, msg=k)


def _update_cosine(a: dict, b: dict, start: dict) -> float:
    """Cosine between two runs' total weight updates (all trainable tensors as one vector)."""
    da = torch.cat([(a[k].cpu() - start[k]).flatten() for k in start])
    db = torch.cat([(b[k].cpu() - start[k]).flatten() for k in start])
    return float(torch.nn.functional.cosine_similarity(da, db, dim=0))


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_fit_on_cuda_updates_the_weights_as_on_cpu(tmp_path):
    """The same 3 steps on CPU and on CUDA (fp32, then bf16 autocast) move the memory modules
    the same way. Not bit-equal: cuDNN convolutions use TF32, and bf16 rounds activations;
    Adam's per-weight normalisation turns tiny gradient differences into sign flips of
    tiny updates, hence a cosine bound, not an elementwise one."""
    import dataclasses

    import fit_worker

    clips = fit_worker.make_clips(4)
    start = fit.trainable_state(fit_worker.tiny_model())
    runs = {}
    for name, device, amp in (
        ("cpu", "cpu", False),
        ("cuda", "cuda", False),
        ("cuda_bf16", "cuda", True),
    ):
        model = fit_worker.tiny_model()
        s = fit_worker.settings(steps=3, batch=2)
        s = dataclasses.replace(s, train=dataclasses.replace(s.train, amp=amp))
        summary = fit.fit(
            model,
            FixedClips(clips),
            clips[:1],
            s,
            tmp_path / f"{name}.pt",
            None,
            torch.device(device),
            "x",
        )
        assert summary["steps"] == 3 and 0.0 <= summary["best_val_jf"] <= 1.0, summary
        assert {p.device.type for p in model.parameters()} == {device}
        runs[name] = fit.trainable_state(model)  # CPU copies
    fp32, bf16 = (_update_cosine(runs["cpu"], runs[n], start) for n in ("cuda", "cuda_bf16"))
    print(f"update cosine vs CPU: cuda fp32 {fp32:.4f}, cuda bf16 {bf16:.4f}")
    assert fp32 > 0.95
    assert bf16 > 0.8


# -- processes, devices and DDP (issue 27) ---------------------------------------------------
def test_collectives_live_on_the_process_groups_device(monkeypatch):
    monkeypatch.setenv("LOCAL_RANK", "1")
    assert fit.collective_device("nccl") == torch.device("cuda", 1)  # NCCL: no CPU tensors
    assert fit.collective_device("gloo") == torch.device("cpu")


def test_validation_broadcast_and_object_mean_use_the_collective_device(monkeypatch):
    """Under NCCL a CPU tensor in a collective crashes every multi-GPU run: both collectives of
    fit must place their tensor where collective_device says (meta here: no GPU needed)."""
    seen = []

    def collective(tensor, *args, **kwargs):
        seen.append(tensor.device)
        raise InterruptedError  # a meta tensor has no value to read back

    monkeypatch.setattr(fit, "collective_device", lambda backend=None: torch.device("meta"))
    monkeypatch.setattr(fit.dist, "broadcast", collective)
    monkeypatch.setattr(fit.dist, "all_reduce", collective)
    for call in (lambda: fit._broadcast(0.5, world=2), lambda: fit.mean_objects_over_ranks(3, 2)):
        with pytest.raises(InterruptedError):
            call()
    assert seen == [torch.device("meta")] * 2


def test_each_rank_gets_its_own_gpu_whatever_the_device_name():
    from sam2_video.model import build

    for name in ("cuda", "cuda:0", "cuda:1"):
        assert build.rank_device(name, local_rank=1, world=2) == torch.device("cuda", 1)
    assert build.rank_device("cuda:1", local_rank=0, world=1) == torch.device("cuda", 1)
    assert build.rank_device("cpu", local_rank=1, world=2) == torch.device("cpu")


def test_more_processes_than_gpus_is_refused_before_any_work(monkeypatch, tmp_path):
    from sam2_video.model import build

    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    with pytest.raises(ValueError, match=r"train.nproc_per_node 2 is more than the 1 GPU"):
        build.check_gpu_count("cuda:0", 2)
    build.check_gpu_count("cuda", 1)
    build.check_gpu_count("cpu", 8)  # gloo processes on the CPU: any number
    monkeypatch.undo()

    from test_errors import stage  # the train stage itself, in an empty folder: one line, exit 1

    gpus = torch.cuda.device_count()
    done = stage("train", tmp_path, {"train.device": "cuda", "train.nproc_per_node": gpus + 1})
    assert done.returncode == 1 and done.stderr.count("\n") == 1, done.stderr
    assert f"train.nproc_per_node {gpus + 1} is more than the {gpus} GPU" in done.stderr


def test_default_trainable_parameters_all_get_gradients_so_ddp_skips_the_search():
    """Every parameter of params.yaml's trainable modules gets a gradient in a step of each
    prompt kind (corrections too): DDP needs no per-step search for unused parameters."""
    import dataclasses

    import fit_worker

    from sam2_video.data.loader import StepBatches
    from sam2_video.model import build, rollout
    from sam2_video.params import defaults

    t = dataclasses.replace(defaults().train, num_correction_clicks=1, image_size=64)
    tiny_model = fit_worker.tiny_model()  # 64 px
    build.set_trainable(tiny_model, t.trainable_modules)
    assert not fit.ddp_finds_unused(tiny_model, t)
    forward = fit.ClipForward(
        tiny_model, t.prompts(), t.losses(), predictor_memory=t.memory_as_predictor
    )
    batch = StepBatches(FixedClips(fit_worker.make_clips(2)), 2, 64, 0, 0, 1, steps=1)[0]
    for kind in ("mask", "points", "box"):
        tiny_model.zero_grad(set_to_none=True)
        plan = rollout.Plan(cond_frames=(0,), kind=kind, correction_frames=(0,)[: kind != "mask"])
        forward(batch, plan, torch.Generator().manual_seed(0), 2.0)["total"].backward()
        unused = [n for n, w in tiny_model.named_parameters() if w.requires_grad and w.grad is None]
        assert unused == [], kind
    # a part some steps skip (point embeddings in a mask step), or clips whose every frame
    # may be prompted (no frame reads the memory): DDP must search
    assert fit.ddp_finds_unused(tiny_model, dataclasses.replace(t, max_cond_frames=8))
    build.set_trainable(tiny_model, [*t.trainable_modules, "sam_prompt_encoder"])
    assert fit.ddp_finds_unused(tiny_model, t)


def test_validation_scores_the_base_at_step_0_and_keeps_it_when_training_does_worse(
    tmp_path, capsys, monkeypatch
):
    """Validation scores that only fall after step 0: the base is the best step, and the
    weights handed back are the base's."""
    import fit_worker

    scores = iter([0.5, 0.4, 0.3, 0.2])
    monkeypatch.setattr(fit, "validate", lambda *args: next(scores))
    clips = fit_worker.make_clips(2)
    model = fit_worker.tiny_model()
    start = fit.trainable_state(model)
    s = fit_worker.settings(steps=3, batch=2)
    s = dataclasses.replace(s, train=dataclasses.replace(s.train, val_every=1))
    summary = fit.fit(
        model, FixedClips(clips), clips[:1], s, tmp_path / "r.pt", None, torch.device("cpu"), "x"
    )
    history = fit.load_resume_state(tmp_path / "r.pt", "x")["run"]["history"]
    assert [(r["step"], r["val/jf"]) for r in history] == [(0, 0.5), (1, 0.4), (2, 0.3), (3, 0.2)]
    assert (summary["best_step"], summary["best_val_jf"]) == (0, 0.5)
    assert "the base (step 0) scored best" in capsys.readouterr().out
    assert all(torch.equal(start[k], v) for k, v in fit.trainable_state(model).items())


def test_without_validation_the_last_step_is_the_model(tmp_path):
    import fit_worker

    model = fit_worker.tiny_model()
    s = fit_worker.settings(steps=2, batch=2)
    clips = FixedClips(fit_worker.make_clips(2))
    summary = fit.fit(model, clips, None, s, tmp_path / "r.pt", None, torch.device("cpu"), "x")
    assert summary["best_step"] == 2 and "best_val_jf" not in summary
