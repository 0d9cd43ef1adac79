import dataclasses
from pathlib import Path

import pytest

from sam2_video import params as P
from sam2_video.model import recipes

REPO = Path(__file__).resolve().parents[1]


def write(tmp_path, text: str) -> Path:
    path = tmp_path / "params.yaml"
    path.write_text(text)
    return path


def loss_weights(t: P.TrainParams) -> tuple:
    return (t.use_focal, t.loss_mask, t.loss_dice, t.loss_iou, t.loss_object_score)


def test_repo_params_file_parses_and_matches_dataclass_defaults():
    # params.yaml states every default of params.py, `auto` where params.py says auto
    assert P.load_raw_params(REPO / "params.yaml") == P.Params()
    p = P.load_params(REPO / "params.yaml")
    assert p == P.defaults()
    assert p.train.trainable_modules[:2] == ("memory_attention", "memory_encoder")
    assert isinstance(p.lr, float)


def test_dvc_style_float_is_read_as_float(tmp_path):
    # `dvc exp run -S lr=1e-5` writes 1e-05, which PyYAML alone reads as a string
    p = P.load_params(write(tmp_path, "lr: 1e-05\n"))
    assert p.lr == pytest.approx(1e-5)


@pytest.mark.parametrize(
    "text,fragment",
    [
        ("lrr: 0.1\n", "lrr"),
        ("train:\n  stepz: 3\n", "train.stepz"),
        ("train:\n  steps: many\n", "train.steps: expected int"),
        ("train:\n  steps: -1\n", "train.steps: -1 is out of range"),
        ("train:\n  prob_mask: 0.9\n", "must sum to 1"),
        ("evaluate:\n  prompts: [mask, scribble]\n", "evaluate.prompts"),
        ("shard:\n  clip_length: 0\n", "shard.clip_length"),
        ("train:\n  image_size: 100\n", "multiple of 16"),
        ("shard:\n  motion:\n    scale: [1.1, 0.9]\n", "shard.motion.scale"),
        ("shard:\n  motion:\n    frame_scale: [1.0]\n", "shard.motion.frame_scale"),
        ("shard:\n  motion:\n    crop_area: [0.5, 1.5]\n", "shard.motion.crop_area"),
        ("shard:\n  motion:\n    brightness: -0.1\n", "shard.motion.brightness"),
        ("shard:\n  motion:\n    rotation: 200\n", "shard.motion.rotation"),
        ("shard:\n  jpeg_quality: 101\n", "shard.jpeg_quality"),
        ("train:\n  clip_length: 17\n", "train.clip_length 17 is above shard.clip_length 16"),
    ],
)
def test_bad_values_fail_naming_the_key(tmp_path, text, fragment):
    with pytest.raises(ValueError, match=None) as err:
        P.load_params(write(tmp_path, text))
    assert fragment in str(err.value)
    assert "params.yaml" in str(err.value)


def test_steps_zero_is_valid(tmp_path):
    assert P.load_params(write(tmp_path, "train:\n  steps: 0\n")).train.steps == 0


def test_describe_lists_every_leaf_with_help():
    rows = {key: (typ, default, text) for key, typ, default, text in P.describe()}
    assert rows["lr"][0] == "float" and rows["lr"][2]
    assert "train.trainable_modules" in rows and "fetch.synthetic.seed" in rows
    assert all(text for _, _, text in rows.values())


def test_missing_file_is_named(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.yaml"):
        P.load_params(tmp_path / "nope.yaml")


def test_lr_scale_is_a_mapping_of_trainable_modules(tmp_path):
    p = P.load_params(write(tmp_path, "train:\n  lr_scale: {memory_encoder: 0.5}\n"))
    assert p.train.lr_scale == {"memory_encoder": 0.5}
    with pytest.raises(ValueError, match="image_encoder"):
        P.load_params(write(tmp_path, "train:\n  lr_scale: {image_encoder: 0.5}\n"))
    with pytest.raises(ValueError, match="train.lr_scale.memory_encoder: expected float"):
        P.load_params(write(tmp_path, "train:\n  lr_scale: {memory_encoder: fast}\n"))


def test_shard_params_read_back_from_a_manifest_are_checked_again():
    section = P.to_dict(P.ShardParams())
    assert P.shard_params_from(section) == P.ShardParams()
    with pytest.raises(ValueError, match="shard.motion.scale"):
        P.shard_params_from(section | {"motion": section["motion"] | {"scale": [2.0, 1.0]}})


def test_repo_params_resolve_to_the_tiny_demo_values():
    """`auto` in params.yaml under model: tiny gives the values the demo was tuned with."""
    p = P.load_params(REPO / "params.yaml")
    assert (p.model, p.fetch.checkpoint, p.train.model) == ("tiny", "tiny", "tiny")
    assert (p.train.image_size, p.shard.max_side, p.shard.clip_length) == (128, 128, 16)
    t = p.train
    assert loss_weights(t) == (False, 20.0, 5.0, 1.0, 10.0)
    assert (t.prob_mask, t.prob_points, t.prob_box, t.num_correction_clicks) == (0.5, 0.25, 0.25, 0)
    assert t.max_cond_frames == 1
    assert t.clip_length == 8  # SAM2's sampler; validation clips keep shard.clip_length


def test_auto_training_clips_are_never_longer_than_the_stored_ones(tmp_path):
    assert P.load_params(write(tmp_path, "shard:\n  clip_length: 4\n")).train.clip_length == 4
    text = "shard:\n  clip_length: 4\ntrain:\n  clip_length: 3\n"
    assert P.load_params(write(tmp_path, text)).train.clip_length == 3


def test_sam21_model_switches_checkpoint_config_size_and_recipe(tmp_path):
    p = P.load_params(write(tmp_path, "model: sam2.1_hiera_small\n" + SYNTH_1024))
    assert (p.fetch.checkpoint, p.train.model) == ("sam2.1_hiera_small", "sam2.1_hiera_small")
    assert (p.train.image_size, p.shard.max_side, p.shard.clip_length) == (1024, 1024, 8)
    t = p.train
    # SAM2.1's fine-tuning recipe: focal, weights 20/1/1/1, mixed prompts, 7 correction clicks
    assert loss_weights(t) == (True, 20.0, 1.0, 1.0, 1.0)
    assert (t.prob_mask, t.prob_points, t.prob_box, t.num_correction_clicks) == (0.5, 0.25, 0.25, 7)


def test_each_models_auto_values_are_its_named_recipes():
    """The train section maps onto the model layer's recipes (their fields are its keys)."""
    named = {
        "tiny": (recipes.TINY_PROMPTS, recipes.TINY_LOSSES),
        "sam2.1_hiera_large": (recipes.SAM21_MOSE_PROMPTS, recipes.SAM21_MOSE_LOSSES),
    }
    for model, (prompts, losses) in named.items():
        t = P.defaults(model).train
        assert (t.prompts(), t.losses()) == (prompts, losses), model
    with pytest.raises(ValueError, match="resolve"):
        P.Params().train.prompts()  # `auto` left in


def test_pretraining_prompts_are_its_keys_over_the_tiny_demos():
    p = P.PretrainParams(prob_mask=0.5, prob_points=0.5, prob_box=0.0, num_correction_clicks=2)
    want = dataclasses.replace(
        recipes.TINY_PROMPTS, prob_mask=0.5, prob_points=0.5, prob_box=0.0, num_correction_clicks=2
    )
    assert p.prompts() == want


def test_explicit_values_win_over_the_model(tmp_path):
    text = "model: sam2.1_hiera_tiny\ntrain:\n  image_size: 256\n  use_focal: false\n"
    p = P.load_params(write(tmp_path, text + "shard:\n  max_side: 512\n" + SYNTH_1024))
    assert (p.train.image_size, p.shard.max_side, p.train.use_focal) == (256, 512, False)
    assert p.train.loss_dice == 1.0  # still auto


def test_a_checkpoint_file_is_kept_as_given(tmp_path):
    p = P.load_params(write(tmp_path, "fetch:\n  checkpoint: /x/my.pt\n"))
    assert (p.fetch.checkpoint, p.train.model) == ("/x/my.pt", "tiny")


SYNTH_1024 = "fetch:\n  synthetic:\n    size: 1024\n"
SAM21 = "model: sam2.1_hiera_tiny\n"


@pytest.mark.parametrize(
    "text,fragment",
    [
        (SAM21 + "shard:\n  max_side: 128\n", "train.image_size 1024 is above shard.max_side 128"),
        ("train:\n  image_size: 256\n", "train.image_size 256 is above shard.max_side 128"),
        (SAM21, "train.image_size 1024 is above fetch.synthetic.size 128"),
        (
            SAM21 + "fetch:\n  checkpoint: sam2.1_hiera_large\n  synthetic:\n    size: 1024\n",
            "fetch.checkpoint 'sam2.1_hiera_large' is another architecture than train.model "
            "'sam2.1_hiera_tiny'",
        ),
        ("fetch:\n  checkpoint: sam2.1_hiera_tiny\n", "than train.model 'tiny' (model: tiny)"),
        ("model: sam2.1_hiera_huge\n", "model: 'sam2.1_hiera_huge' is not allowed"),
        ("train:\n  image_size: big\n", "train.image_size: expected int or 'auto'"),
        ("fetch:\n  source: auto\n", "fetch.source: 'auto' is not allowed"),
        ("model: auto\n", "model: 'auto' is not allowed"),
    ],
)
def test_inconsistent_model_keys_fail_naming_them(tmp_path, text, fragment):
    with pytest.raises(ValueError) as err:
        P.load_params(write(tmp_path, text))
    assert fragment in str(err.value) and "params.yaml" in str(err.value)


def test_params_command_says_which_value_auto_chose(tmp_path, capsys):
    from sam2_video import cli

    path = write(tmp_path, "model: sam2.1_hiera_base_plus\n" + SYNTH_1024)
    assert cli.main(["params", "--file", str(path)]) == 0
    lines = capsys.readouterr().out.splitlines()
    image = next(line for line in lines if line.startswith("train.image_size "))
    assert "= 1024 (auto, model sam2.1_hiera_base_plus)" in image
    focal = lines[lines.index(next(x for x in lines if x.startswith("train.use_focal "))) + 1]
    assert "auto: tiny False, SAM2.1 True" in focal
