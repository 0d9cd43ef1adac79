"""files: atomic writes leave nothing half-written; source_digest follows code, not weights."""

from __future__ import annotations

from pathlib import Path

import pytest

from sam2_video.files import atomic_path, source_digest


def make_package(root: Path) -> Path:
    package = root / "pkg"
    (package / "model" / "configs").mkdir(parents=True)
    (package / "__init__.py").write_text("")
    (package / "model" / "build.py").write_text("SIZE = 128\n")
    (package / "model" / "configs" / "tiny.yaml").write_text("d_model: 64\n")
    (package / "model" / "weights.pt").write_bytes(b"\x00" * 16)
    return package


def test_source_digest_changes_with_code_and_config_but_not_weights(tmp_path):
    package = make_package(tmp_path)
    script = tmp_path / "train.py"
    script.write_text("main()\n")
    first = source_digest(package, (script,))
    assert source_digest(package, (script,)) == first
    (package / "model" / "weights.pt").write_bytes(b"\x01" * 16)
    assert source_digest(package, (script,)) == first
    for path, text in [
        (package / "model" / "build.py", "SIZE = 256\n"),
        (package / "model" / "configs" / "tiny.yaml", "d_model: 32\n"),
        (script, "main(1)\n"),
    ]:
        path.write_text(text)
        assert source_digest(package, (script,)) != first
        first = source_digest(package, (script,))


def test_source_digest_sees_code_moved_between_files(tmp_path):
    """Plain concatenation of the bytes would hash these two trees alike."""
    a, b = make_package(tmp_path / "a"), make_package(tmp_path / "b")
    (a / "__init__.py").write_text("X = 1\n")
    (b / "model" / "build.py").write_text("X = 1\nSIZE = 128\n")
    (a / "model" / "build.py").write_text("SIZE = 128\n")
    assert source_digest(a) != source_digest(b)


def test_atomic_path_leaves_no_file_when_the_writer_fails(tmp_path):
    final = tmp_path / "out.json"
    with pytest.raises(RuntimeError), atomic_path(final) as tmp:
        tmp.write_text("{half")
        raise RuntimeError("killed")
    assert not final.exists() and list(tmp_path.iterdir()) == []
