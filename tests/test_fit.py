import pytest

from sam2_video import fit
from sam2_video.model import losses, rollout


def settings(**overrides) -> fit.FitSettings:
    def make(steps=100, lr=1e-3, warmup_steps=10, **rest):
        return fit.FitSettings(
            steps=steps, lr=lr, batch_size=2, grad_accum=1, weight_decay=0.0,
            warmup_steps=warmup_steps, min_lr_ratio=0.1, grad_clip=1.0, image_size=128, seed=0,
            prompts=rollout.PromptConfig(), loss_weights=losses.LossWeights(), amp=False,
            num_workers=0, checkpoint_every=10, val_every=10, val_clips=1,
            early_stop_patience=0, **rest,
        )  # fmt: skip

    return make(**overrides)


def test_lr_schedule_warms_up_linearly_then_decays_to_the_floor():
    s = settings()
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
    assert settings().fingerprint() == settings().fingerprint()
    assert settings().fingerprint() != settings(lr=2e-3).fingerprint()
    assert settings().fingerprint("a") != settings().fingerprint("b")
