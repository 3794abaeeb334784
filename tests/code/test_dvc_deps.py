"""dvc.yaml's code deps cannot drift: every project module a stage's entry module imports,
transitively (read with `ast`, not imported), lies under one of that stage's deps, and every
code dep names a file or folder that exists."""

from __future__ import annotations

import ast
from functools import cache
from pathlib import Path, PurePosixPath

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
PROJECT = ("components", "flows")  # top-level packages whose files count
STAGES = yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"]


def module_file(name: str) -> Path | None:
    """components.a.b -> components/a/b.py or components/a/b/__init__.py, whichever exists."""
    base = REPO.joinpath(*name.split("."))
    return next((p for p in (base.with_suffix(".py"), base / "__init__.py") if p.is_file()), None)


def entry_module(stage: str) -> str:
    """The module of the stage's function in the CLI's stage table (components/stages/<stage>.py)."""
    from components import cli

    return cli.STAGES[stage].run.__module__


def imported_modules(path: Path) -> set[str]:
    """Project module names a file imports anywhere (functions included); `from a import b` gives
    a.b when that is a submodule, else a. A string constant naming a pyfunc entry file
    ("fsrfer_model.py": components/serving/, logged as a model from code by path) counts too."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Constant) and isinstance(node.value, str) and node.value.endswith("_model.py") \
                and module_file(f"components.serving.{node.value[:-3]}"):
            names.add(f"components.serving.{node.value[:-3]}")
        if isinstance(node, ast.Import):
            names |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            names |= {f"{node.module}.{a.name}" if module_file(f"{node.module}.{a.name}") else node.module
                      for a in node.names}
    return {n for n in names if n.split(".")[0] in PROJECT}


@cache
def closure(module: str) -> set[str]:
    """Repo-relative files of `module` and everything it imports, with non-empty package __init__s."""
    seen: set[Path] = set()
    todo = [module]
    while todo:
        name = todo.pop()
        parts = name.split(".")
        files = [module_file(name)] + [module_file(".".join(parts[:i])) for i in range(1, len(parts))]
        for f in files:
            if f is None or f in seen or (f.name == "__init__.py" and not f.read_text().strip()):
                continue
            seen.add(f)
            todo.extend(imported_modules(f))
    return {f.relative_to(REPO).as_posix() for f in seen}


def code_deps(stage: str) -> list[str]:
    deps = [d for d in STAGES[stage].get("deps", []) if "${" not in d]
    return [PurePosixPath(d).as_posix() for d in deps if d.split("/")[0] in PROJECT]


def covered(file: str, deps: list[str]) -> bool:
    return any(file == d or PurePosixPath(d) in PurePosixPath(file).parents for d in deps)


@pytest.mark.parametrize("stage", list(STAGES))
def test_deps_cover_every_imported_module(stage):
    module = entry_module(stage)
    assert module_file(module), f"{stage}: entry module {module} has no file"
    missing = sorted(f for f in closure(module) if not covered(f, code_deps(stage)))
    assert not missing, f"dvc.yaml stage {stage} (entry {module}) misses deps:\n  " + "\n  ".join(missing)


@pytest.mark.parametrize("stage", list(STAGES))
def test_code_deps_exist(stage):
    gone = [d for d in code_deps(stage) if not (REPO / d).exists()]
    assert not gone, f"dvc.yaml stage {stage} lists code deps that do not exist: {gone}"


@pytest.mark.parametrize("stage", list(STAGES))
def test_params_list_the_shared_sections_a_stage_reads(stage):
    """A stage whose config inherits [ray] or [gme_net] lists that section in its params, so a change
    there reruns it (and only the stages that read it)."""
    from components import cli
    from components.config import shared_sections

    params = STAGES[stage].get("params", [])
    missing = sorted(set(shared_sections(cli.STAGES[stage].config)) - set(params))
    assert not missing, f"dvc.yaml stage {stage} reads params sections {missing} but does not list them"


def test_tune_params_are_what_a_trial_inherits_from_train_fsr():
    from components.stages.tune import TRIAL_INHERITS

    listed = sorted(p.split(".", 1)[1] for p in STAGES["tune"]["params"] if p.startswith("train_fsr."))
    assert listed == sorted(TRIAL_INHERITS), "dvc.yaml tune params must be tune.TRIAL_INHERITS, no more, no less"
