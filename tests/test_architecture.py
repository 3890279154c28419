"""The floors: every module imports only downward (lazy imports included), and no import cycle exists."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest
import tomllib

ROOT = Path(__file__).resolve().parents[1]


def _import_graph():
    spec = importlib.util.spec_from_file_location("import_graph", ROOT / "scripts" / "import_graph.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _floors() -> list[list[str]]:
    """The import-linter contract's layers, top first, each a list of its module names."""
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())
    (contract,) = config["tool"]["importlinter"]["contracts"]
    return [[m.strip() for m in layer.split(":")] for layer in contract["layers"]]


def _floor_of(module: str, floors: list[list[str]]) -> int | None:
    for level, names in enumerate(floors):
        if any(module == n or module.startswith(n + ".") for n in names):
            return level
    return None


def test_no_import_cycles():
    ig = _import_graph()
    assert ig.cycles(ig.module_graph()) == []


def test_every_module_has_a_floor_and_imports_only_downward():
    ig = _import_graph()
    graph, floors = ig.module_graph(), _floors()
    upward = []
    for module, targets in graph.items():
        if module == "xpnn":  # the package's __init__ gathers the public names from every floor
            continue
        level = _floor_of(module, floors)
        assert level is not None, f"{module} is on no floor: add it to [tool.importlinter] in pyproject.toml"
        for target in targets:
            target_level = _floor_of(target, floors)
            if target == "xpnn" or (target_level is not None and target_level < level):
                upward.append(f"{module} -> {target}")
    assert upward == []


def test_the_check_sees_lazy_imports(tmp_path):
    """A function-level import is an edge: a model that imported training lazily would be a cycle."""
    ig = _import_graph()
    pkg = tmp_path / "pkg"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "low.py").write_text("def f():\n    from pkg import high\n    return high\n")
    (pkg / "high.py").write_text("from pkg.low import f\n")
    assert ig.cycles(ig.module_graph(pkg)) == [["pkg.high", "pkg.low"]]


@pytest.mark.parametrize("floor", ["xpnn.model", "xpnn.training.loop"])
def test_lower_floors_do_not_reach_mpi_or_the_front(floor):
    ig = _import_graph()
    graph = ig.module_graph()
    seen, todo = set(), [floor]
    while todo:
        m = todo.pop()
        if m not in seen:
            seen.add(m)
            todo.extend(graph[m])
    assert not {m for m in seen if m.startswith(("xpnn.distributed", "xpnn.api", "xpnn.cli"))}
