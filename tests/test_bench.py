"""bench.train's RESULTS.md writer: a run rewrites only the block it measured; bench.base_study
runs the recipe under study."""

import json
import shlex

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
