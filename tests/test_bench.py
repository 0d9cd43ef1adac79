"""bench.train's RESULTS.md writer: a run rewrites only the block it measured."""

from bench import train


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
