"""The import graph of components/ and flows/ has no circle and no upward arrow: stages are
leaves (only the CLI imports them), the library lies under them (read with `ast`, every import
of a file, functions included; tests/code/test_dvc_deps.py walks the same way)."""

from __future__ import annotations

from functools import cache
from pathlib import Path

import pytest

from tests.code.test_dvc_deps import REPO, imported_modules

# Low to high: a module may import its own layer or lower ones (stages: lower ones only).
LAYERS = [
    ["components.io"],
    ["components.config", "components.runtime", "components.losses", "components.tracking", "components.metrics",
     "components.models", "components.data"],
    ["components.distributed", "components.serving"],
    ["components.registry", "components.training"],
    ["components.stages"],
    ["components.cli", "flows"],
]


def layer_of(module: str) -> int:
    for rank, prefixes in enumerate(LAYERS):
        if any(module == p or module.startswith(p + ".") for p in prefixes):
            return rank
    raise AssertionError(f"{module}: in no layer of {LAYERS}; place it")


@cache
def graph() -> dict[str, set[str]]:
    files = [f for f in sorted(REPO.glob("components/**/*.py")) + sorted(REPO.glob("flows/*.py"))
             if f.name != "__init__.py"]
    name = {f: ".".join(f.relative_to(REPO).with_suffix("").parts) for f in files}
    known = set(name.values())
    return {name[f]: {m for m in imported_modules(f) if m in known} for f in files}


def test_every_module_has_a_layer():
    for module in graph():
        layer_of(module)


@pytest.mark.parametrize("module", sorted(graph()))
def test_no_upward_import(module):
    edges = graph()[module]
    up = sorted(m for m in edges if layer_of(m) > layer_of(module))
    assert not up, f"{module} (layer {layer_of(module)}) imports higher layers: {up}"
    if module.startswith("components.stages."):
        sideways = sorted(m for m in edges if m.startswith("components.stages."))
        assert not sideways, f"stage {module} imports other stages {sideways}: move the shared part down"


def test_no_import_circle():
    g = graph()
    state: dict[str, int] = {}  # 1 = on the current path, 2 = done

    def visit(node: str, path: list[str]) -> None:
        state[node] = 1
        for nxt in sorted(g.get(node, ())):
            if state.get(nxt) == 1:
                raise AssertionError("import circle: " + " -> ".join(path[path.index(nxt):] + [nxt]))
            if nxt not in state:
                visit(nxt, path + [nxt])
        state[node] = 2

    for node in sorted(g):
        if node not in state:
            visit(node, [node])


def test_the_walk_sees_function_local_imports(tmp_path):
    """The check reads imports inside functions too (a hidden tie would otherwise pass)."""
    f = tmp_path / "m.py"
    f.write_text("def f():\n    from components.stages.train_fsr import train_fsr\n")
    assert "components.stages.train_fsr" in imported_modules(Path(f))


def test_ruff_is_clean():
    """The lint configured in pyproject.toml ([tool.ruff]) passes on the whole tree."""
    import subprocess
    import sys

    done = subprocess.run([sys.executable, "-m", "ruff", "check", "--no-cache", str(REPO)], capture_output=True, text=True)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-2000:]
