"""Each stage's dvc.yaml dependencies cover every project module its script imports, directly
or through other project modules, so DVC never serves a result of old code."""

from __future__ import annotations

import ast
import shutil
from pathlib import Path

import pytest
import yaml
from dvc_project import REPO, init_git, run

SRC = REPO / "src"
PACKAGE = "sam2_video"


def module_file(name: str) -> Path | None:
    """The file of project module `name` (a package's __init__.py), None if not ours."""
    if name != PACKAGE and not name.startswith(PACKAGE + "."):
        return None
    path = SRC / Path(*name.split("."))
    if (path / "__init__.py").is_file():
        return path / "__init__.py"
    return path.with_suffix(".py") if path.with_suffix(".py").is_file() else None


def imported_modules(path: Path) -> set[str]:
    """Project modules `path` imports: `import a.b`, `from a import b` (b a module or a name
    of a), `from . import b`; with each package on the way (its __init__ runs too)."""
    tree = ast.parse(path.read_text())
    package = _package_of(path)
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*parts, base] if base else parts)
            names.add(base)
            names.update(f"{base}.{alias.name}" for alias in node.names)
    found = set()
    for name in names:
        parts = name.split(".")
        for i in range(1, len(parts) + 1):
            if module_file(".".join(parts[:i])) is not None:
                found.add(".".join(parts[:i]))
    return found


def _package_of(path: Path) -> str:
    if not path.is_relative_to(SRC):
        return ""
    parts = path.relative_to(SRC).with_suffix("").parts
    return ".".join(parts if path.name == "__init__.py" else parts[:-1])


def import_closure(script: Path) -> set[Path]:
    """Files of every project module `script` imports, transitively."""
    todo, seen = [script], set()
    while todo:
        path = todo.pop()
        for name in imported_modules(path):
            file = module_file(name)
            if file not in seen:
                seen.add(file)
                todo.append(file)
    return seen


def stage_deps(dvc_yaml: Path) -> dict[str, tuple[str, list[str]]]:
    """stage -> (its script, its deps), for stages whose command runs stages/<name>.py."""
    stages = yaml.safe_load(dvc_yaml.read_text())["stages"]
    out = {}
    for name, spec in stages.items():
        script = next(w for w in spec["cmd"].split() if w.endswith(".py"))
        out[name] = (script, [d for d in spec.get("deps", []) if isinstance(d, str)])
    return out


def uncovered(dvc_yaml: Path) -> dict[str, list[str]]:
    """stage -> imported project files no dependency of the stage covers."""
    missing, here = {}, dvc_yaml.parent  # paths in a dvc.yaml are relative to its folder
    for stage, (script, deps) in stage_deps(dvc_yaml).items():
        covered = [(here / d).resolve() for d in deps if "${" not in d]
        gaps = [
            str(f.relative_to(REPO))
            for f in sorted(import_closure((here / script).resolve()))
            if not any(f == c or f.is_relative_to(c) for c in covered)
        ]
        if gaps:
            missing[stage] = gaps
    return missing


@pytest.mark.parametrize("dvc_yaml", ["dvc.yaml", "pretrain/dvc.yaml"])
def test_every_imported_project_module_is_a_dependency_of_its_stage(dvc_yaml):
    assert uncovered(REPO / dvc_yaml) == {}


def test_the_closure_follows_imports_through_modules_and_packages():
    closure = {str(p.relative_to(REPO)) for p in import_closure(REPO / "stages" / "render.py")}
    assert "src/sam2_video/render.py" in closure
    assert "src/sam2_video/files.py" in closure  # imported by render.py, not by the script
    assert "src/sam2_video/__init__.py" in closure


def test_a_missing_dependency_is_reported(tmp_path):
    spec = yaml.safe_load((REPO / "dvc.yaml").read_text())
    render = spec["stages"]["render"]  # files.py (imported by render.py) left out:
    render["cmd"] = f"python {REPO / 'stages' / 'render.py'}"
    render["deps"] = [str(REPO / "stages" / "render.py"), str(REPO / "src/sam2_video/render.py")]
    spec["stages"] = {"render": render}
    dvc_yaml = tmp_path / "dvc.yaml"
    dvc_yaml.write_text(yaml.safe_dump(spec))
    assert "src/sam2_video/files.py" in uncovered(dvc_yaml)["render"]


def test_make_tiny_base_thaw_and_freeze_leave_pretrain_dvc_yaml_as_committed(tmp_path):
    """`make tiny-base` unfreezes and re-freezes the pretrain stages; DVC rewrites the file
    in its own order then, which must be the order it is committed in."""
    (tmp_path / "pretrain").mkdir()
    shutil.copy(REPO / "pretrain" / "dvc.yaml", tmp_path / "pretrain" / "dvc.yaml")
    init_git(tmp_path, "Freeze Test")
    run(["dvc", "init", "-q"], tmp_path)
    stages = ["pretrain/dvc.yaml:pretrain", "pretrain/dvc.yaml:joint"]
    run(["dvc", "unfreeze", *stages], tmp_path)
    run(["dvc", "freeze", *stages], tmp_path)
    assert (tmp_path / "pretrain" / "dvc.yaml").read_text() == (
        REPO / "pretrain" / "dvc.yaml"
    ).read_text()
