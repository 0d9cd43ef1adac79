import pytest
import torch

from sam2_video.model import build


def test_checkpoint_round_trip_is_exact_and_strict(tmp_path, tiny_cfg, tiny_model):
    path = tmp_path / "m.pt"
    build.save_checkpoint(tiny_model, path)
    state = torch.load(path, weights_only=True)
    assert set(state) == {"model"}
    other = build.build_model(tiny_cfg)
    build.load_checkpoint(other, path)
    for (name, a), (_, b) in zip(
        tiny_model.state_dict().items(), other.state_dict().items(), strict=True
    ):
        assert torch.equal(a, b), name


def test_checkpoint_of_another_architecture_is_refused_naming_the_file(tmp_path, tiny_model):
    path = tmp_path / "wrong.pt"
    state = tiny_model.state_dict()
    state.pop(next(iter(state)))
    state["extra.weight"] = torch.zeros(1)
    torch.save({"model": state}, path)
    with pytest.raises(ValueError, match="wrong.pt.*missing.*unexpected"):
        build.load_checkpoint(tiny_model, path)


def test_set_trainable_freezes_everything_else(tiny_model):
    build.set_trainable(tiny_model, ["memory_attention", "memory_encoder"])
    summary = build.parameter_summary(tiny_model)
    assert summary["memory_attention"][0] == summary["memory_attention"][1] > 0
    assert summary["image_encoder"][1] == 0 and summary["sam_mask_decoder"][1] == 0
    with pytest.raises(ValueError, match="memory_attn"):
        build.set_trainable(tiny_model, ["memory_attn"])


def test_image_size_override_reaches_rope_feature_sizes():
    cfg = build.load_model_config("tiny", image_size=256)
    assert cfg.model.image_size == 256
    assert list(cfg.model.memory_attention.layer.cross_attention.feat_sizes) == [16, 16]
    with pytest.raises(ValueError, match="multiple of 16"):
        build.load_model_config("tiny", image_size=100)


def test_sam21_configs_resolve_to_package_files():
    for name in build.SAM21_CONFIGS:
        assert build.model_config_path(name).is_file()
    with pytest.raises(ValueError, match="unknown model"):
        build.model_config_path("sam3")


def test_exported_config_builds_sam2_video_predictor(tmp_path, tiny_cfg, tiny_model):
    build.save_model_config(tiny_cfg, tmp_path / "sam2_model.yaml")
    build.save_checkpoint(tiny_model, tmp_path / "w.pt")
    cfg = build.load_model_config(str(tmp_path / "sam2_model.yaml"))
    predictor = build.build_model(cfg, target=build.VIDEO_PREDICTOR_TARGET)
    build.load_checkpoint(predictor, tmp_path / "w.pt")
    assert type(predictor).__name__ == "SAM2VideoPredictor"


def test_checkpoint_with_a_tensor_of_another_shape_is_refused_in_one_message(tmp_path, tiny_model):
    path = tmp_path / "shape.pt"
    state = tiny_model.state_dict()
    name = next(iter(state))
    state[name] = torch.zeros(3, 1)  # torch's own strict load raises a multi-line RuntimeError
    torch.save({"model": state}, path)
    with pytest.raises(ValueError, match=f"shape.pt.*1 of another shape \\(e.g. {name}\\)"):
        build.load_checkpoint(tiny_model, path)


def test_a_file_that_is_no_checkpoint_is_named(tmp_path, tiny_model):
    path = tmp_path / "notes.pt"
    path.write_text("not a checkpoint")
    with pytest.raises(ValueError, match="notes.pt: not a readable PyTorch checkpoint"):
        build.load_checkpoint(tiny_model, path)


def test_check_checkpoint_refuses_the_tiny_weights_for_a_sam21_config(tmp_path, tiny_model):
    path = tmp_path / "tiny.pt"
    build.save_checkpoint(tiny_model, path)
    cfg = build.load_model_config("sam2.1_hiera_tiny", 128)
    with pytest.raises(ValueError, match="tiny.pt: checkpoint of another architecture.*; FIX"):
        build.check_checkpoint(cfg, path, "FIX")
    build.check_checkpoint(build.load_model_config("tiny", 128), path, "FIX")  # its own: fine
