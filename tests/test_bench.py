"""bench.train's RESULTS.md writer: a run rewrites only the block it measured; bench.base_study
runs the recipe under study; bench.headroom's memory-free ceiling prompts the exact box."""

import json
import shlex
from pathlib import Path

import numpy as np
import pytest
from dvc_project import init_git, run

from bench import base_study, train


def _write(path, cpu, gpu):
    train.write_section(path, cpu, gpu)
    return path.read_text(encoding="utf-8")


def test_cpu_run_keeps_gpu_numbers_and_other_sections(tmp_path):
    path = tmp_path / "RESULTS.md"
    path.write_text("# Benchmarks\n\n## Data\n\ndata table\n\n## Training\n\nold prose\n")
    text = _write(path, ["cpu v1"], None)
    assert "data table" in text and "old prose" not in text  # unmarked section body: ours
    assert train.GPU_NOT_MEASURED[0] in text
    text = _write(path, None, ["gpu v1"])
    text = _write(path, ["cpu v2"], None)
    assert text == (
        "# Benchmarks\n\n## Data\n\ndata table\n\n## Training\n\n"
        f"{train.BEGIN}\ncpu v2\n{train.END}\n\n{train.GPU_BEGIN}\ngpu v1\n{train.GPU_END}\n"
    )


def test_hand_written_notes_after_the_blocks_survive_both_runs(tmp_path):
    path = tmp_path / "RESULTS.md"
    _write(path, ["cpu v1"], ["gpu v1"])
    path.write_text(path.read_text() + "\nnotes by hand\n\n## Later\n\nmore\n")
    text = _write(path, ["cpu v2"], ["gpu v2"])
    assert text.endswith(
        f"{train.GPU_BEGIN}\ngpu v2\n{train.GPU_END}\n\nnotes by hand\n\n## Later\n\nmore\n"
    )
    assert text.count(train.BEGIN) == text.count(train.GPU_BEGIN) == 1
    assert "cpu v1" not in text and "cpu v2" in text


def test_base_study_runs_each_change_of_the_recipe_under_study(tmp_path, monkeypatch):
    """--set KEY=VALUE reaches `dvc exp run` as -S, after the run's seed and base."""
    commands = []

    def fake_run(cmd, cwd, log):  # what `dvc exp run` leaves in the clone
        commands.append(cmd[-1])
        (cwd / "metrics").mkdir(parents=True)
        (cwd / "metrics" / "eval.json").write_text(json.dumps({"jf_gain_mask": 0.1}))
        (cwd / "metrics" / "per_object.json").write_text("[]")
        plots = cwd / "dvclive" / "train" / "plots" / "metrics" / "val"
        plots.mkdir(parents=True)
        (plots / "jf.tsv").write_text("step\tjf\n0\t0.4\n50\t0.5\n")
        (cwd / "dvclive" / "train" / "metrics.json").write_text(json.dumps({"best_step": 50}))

    monkeypatch.setattr(base_study, "run", fake_run)
    monkeypatch.setattr(base_study, "clone", lambda dest: dest)
    base = tmp_path / "bases" / "seed3.pt"
    changes = ("train.val_clips=32", "fetch.synthetic.train_videos=80")
    result = base_study.fine_tune(tmp_path, base, 2, changes)

    words = shlex.split(commands[0])
    sets = [words[i + 1] for i, word in enumerate(words) if word == "-S"]
    assert sets == [
        "seed=2",
        f"fetch.checkpoint={base}",
        "train.val_clips=32",
        "fetch.synthetic.train_videos=80",
    ]
    assert result == {"jf_gain_mask": 0.1, "best_step": 50, "tune_jf": {0: 0.4, 50: 0.5}}


class _BoxFiller:
    """An image predictor that segments exactly the box it is given (SAM2's box: the corner
    pixels, both inside)."""

    def set_image(self, frame):
        self.shape = frame.shape[:2]

    def predict(self, box, multimask_output):
        x0, y0, x1, y1 = (int(v) for v in box)
        mask = np.zeros(self.shape, dtype=bool)
        mask[y0 : y1 + 1, x0 : x1 + 1] = True
        return mask[None].astype(np.float32), None, None


def test_headroom_box_prompt_is_the_objects_exact_box():
    """box_j: J of the box's prediction on each frame an object is present, NaN elsewhere;
    a rectangle's box is the rectangle itself (J 1), a plus sign's is 5 of 9 cells."""
    from bench import headroom

    frames = np.zeros((2, 9, 9, 3), dtype=np.uint8)
    masks = np.zeros((2, 2, 9, 9), dtype=bool)
    masks[0, 0, 2:5, 3:8] = True  # a rectangle on frame 0
    masks[1, 1, 3:6, 4] = masks[1, 1, 4, 3:6] = True  # a plus sign on frame 1
    j = headroom.box_j(_BoxFiller(), frames, masks)
    assert j[0, 0] == 1.0 and j[1, 1] == 5 / 9
    assert np.isnan(j[1, 0]) and np.isnan(j[0, 1])


def test_headroom_bins_object_frames_by_visible_area_and_skips_absent_ones():
    from bench import headroom

    area = np.array([[0.1, 0.9], [1.0, 0.0], [2.0, 0.6]])  # (T, O) visible / frame 0's
    box = np.array([[0.2, 0.8], [0.6, np.nan], [0.9, 0.5]])  # NaN: absent
    tracking = np.array([[0.0, 0.4], [1.0, 1.0], [0.5, 0.3]])
    lines = headroom.by_visible_area(tracking, box, area)
    assert "   1 object-frames, tracking 0.000  per-frame box 0.200" in lines[0]  # 0-0.25
    assert "   0 object-frames" in lines[1]
    assert "   1 object-frames, tracking 0.300  per-frame box 0.500" in lines[2]
    assert "   2 object-frames, tracking 0.700  per-frame box 0.700" in lines[3]  # 0.9, 1.0
    assert "   1 object-frames, tracking 0.500  per-frame box 0.900" in lines[4]  # more in view


def test_base_study_builds_a_base_of_the_changed_pretrain_recipe_through_dvc(tmp_path, monkeypatch):
    """--pretrain-set rewrites pretrain/params.yaml's keys (an unknown one stops the study)
    and DVC's repro of the thawed pipeline decides which stages re-run."""
    commands = []

    def fake_run(cmd, cwd, log):  # what the joint stage leaves: the tiny base
        commands.append((cmd[-1], cwd))
        (cwd / base_study.TINY_BASE).parent.mkdir(parents=True)
        (cwd / base_study.TINY_BASE).write_bytes(b"weights")

    def fake_clone(dest):
        (dest / "pretrain").mkdir(parents=True)
        (dest / "pretrain" / "params.yaml").write_text(
            (base_study.REPO / "pretrain" / "params.yaml").read_text()
        )
        return dest

    monkeypatch.setattr(base_study, "run", fake_run)
    monkeypatch.setattr(base_study, "clone", fake_clone)
    base = base_study.build_base(tmp_path, 2, False, ("image_alike=0.5", "joint_steps=900"))
    params = (tmp_path / "pretrain-seed2" / "pretrain" / "params.yaml").read_text()
    assert "\n  seed: 2\n" in params and "\n  image_alike: 0.5\n" in params
    assert "\n  joint_steps: 900\n" in params and base.read_bytes() == b"weights"
    command, cwd = commands[0]
    assert cwd == tmp_path / "pretrain-seed2" and command.endswith("dvc repro pretrain/dvc.yaml")
    with pytest.raises(SystemExit, match="no key pretrain.image_alik"):
        base_study.build_base(tmp_path, 3, False, ("image_alik=0.5",))


@pytest.fixture
def origin(tmp_path, monkeypatch) -> Path:
    """A git repository with one commit, standing in for the checkout base_study clones."""
    repo = tmp_path / "origin"
    repo.mkdir()
    init_git(repo, "bench-test")
    run(["git", "commit", "-q", "--allow-empty", "-m", "one"], repo)
    monkeypatch.setattr(base_study, "REPO", repo)
    return repo


def test_base_study_refuses_a_work_folder_cloned_from_other_code(tmp_path, origin):
    # a --work kept from an earlier study holds a clone of that code: reusing it would
    # report the old code's gains as today's
    dest = tmp_path / "work" / "runs"
    assert base_study.clone(dest) == dest and base_study.clone(dest) == dest
    run(["git", "commit", "-q", "--allow-empty", "-m", "two"], origin)
    with pytest.raises(SystemExit, match="another commit than HEAD"):
        base_study.clone(dest)
    (tmp_path / "work" / "bases").mkdir()  # a folder that is no clone says so
    with pytest.raises(SystemExit, match="bases: not a git clone"):
        base_study.clone(tmp_path / "work" / "bases")


def test_base_study_refuses_a_work_folder_of_another_recipe_or_commit(tmp_path, origin):
    # cached bases and results are keyed by seed: another study's would pass for this one's
    recipe = {"shipped": True, "set": ["lr=1e-4"], "pretrain_set": []}
    base_study.claim(tmp_path, recipe)
    base_study.claim(tmp_path, recipe)  # resuming the same study
    with pytest.raises(SystemExit, match="use a new --work"):
        base_study.claim(tmp_path, {**recipe, "set": []})
    run(["git", "commit", "-q", "--allow-empty", "-m", "two"], origin)
    with pytest.raises(SystemExit, match="use a new --work"):
        base_study.claim(tmp_path, recipe)
