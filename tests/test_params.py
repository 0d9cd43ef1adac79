from pathlib import Path

import pytest

from sam2_video import params as P

REPO = Path(__file__).resolve().parents[1]


def write(tmp_path, text: str) -> Path:
    path = tmp_path / "params.yaml"
    path.write_text(text)
    return path


def test_repo_params_file_parses_and_matches_dataclass_defaults():
    p = P.load_params(REPO / "params.yaml")
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
