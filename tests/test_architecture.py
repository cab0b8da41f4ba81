"""The package's shape: no import cycles, imports only go down the layers, no module over 500 lines.

Imports are read from the source (``ast``), function-level ones included: a cycle hidden behind a
deferred import is still a cycle for a reader. Imports under ``if TYPE_CHECKING:`` are annotations
only and are left out.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("drugcell", "contest_scorer")
MAX_LINES = 500

#: Layers from the bottom up; a module may import its own layer or lower ones, never higher ones.
#: A module is placed by its longest matching prefix.
LAYERS: list[tuple[str, ...]] = [
    ("contest_scorer",),
    ("drugcell", "drugcell.errors", "drugcell.defaults", "drugcell.registry", "drugcell.paths",
     "drugcell.provenance", "drugcell.reporting", "drugcell.metrics", "drugcell.outputs", "drugcell.progress"),
    ("drugcell.chem",),
    ("drugcell.data",),
    ("drugcell.splits",),
    ("drugcell.models",),
    ("drugcell.evaluation.bootstrap", "drugcell.evaluation.summary", "drugcell.config", "drugcell.sweeps"),
    ("drugcell.evaluation", "drugcell.calibration", "drugcell.programs", "drugcell.report", "drugcell.tuning"),
    ("drugcell.persistence", "drugcell.fitting", "drugcell.prediction", "drugcell.submission",
     "drugcell.demo", "drugcell.heldout", "drugcell.scoring", "drugcell.api"),
    ("drugcell.commands",),
    ("drugcell.cli", "drugcell.__main__"),
]


def _modules() -> dict[str, Path]:
    out = {}
    for pkg in PACKAGES:
        for path in sorted((ROOT / pkg).rglob("*.py")):
            parts = list(path.relative_to(ROOT).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts.pop()
            out[".".join(parts)] = path
    return out


def _is_type_checking(node: ast.If) -> bool:
    t = node.test
    return (isinstance(t, ast.Name) and t.id == "TYPE_CHECKING") or (
        isinstance(t, ast.Attribute) and t.attr == "TYPE_CHECKING")


def _imports(module: str, path: Path, known: set[str]) -> set[str]:
    """Package modules that ``module`` imports (module- and function-level)."""
    is_pkg = path.name == "__init__.py"
    found: set[str] = set()

    def resolve(name: str) -> None:
        while name and name not in known:  # `from a.b import c` where c is a name, not a module
            name = name.rpartition(".")[0]
        if name and name != module:
            found.add(name)

    def visit(node: ast.AST) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.If) and _is_type_checking(child):
                for sub in child.orelse:
                    visit(sub)
                continue
            if isinstance(child, ast.Import):
                for alias in child.names:
                    resolve(alias.name)
            elif isinstance(child, ast.ImportFrom):
                base = child.module or ""
                if child.level:
                    pkg = module if is_pkg else module.rpartition(".")[0]
                    for _ in range(child.level - 1):
                        pkg = pkg.rpartition(".")[0]
                    base = f"{pkg}.{base}" if base else pkg
                for alias in child.names:
                    full = f"{base}.{alias.name}"
                    resolve(full if full in known else base)
            visit(child)

    visit(ast.parse(path.read_text(), filename=str(path)))
    return found


def _graph() -> dict[str, set[str]]:
    mods = _modules()
    known = set(mods)
    return {m: _imports(m, p, known) for m, p in mods.items()}


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    out: list[list[str]] = []
    counter = 0
    for root in sorted(graph):
        if root in index:
            continue
        work = [(root, iter(sorted(graph[root])))]
        index[root] = low[root] = counter
        counter += 1
        stack.append(root)
        on_stack.add(root)
        while work:
            node, it = work[-1]
            nxt = next(it, None)
            if nxt is not None:
                if nxt not in index:
                    index[nxt] = low[nxt] = counter
                    counter += 1
                    stack.append(nxt)
                    on_stack.add(nxt)
                    work.append((nxt, iter(sorted(graph.get(nxt, ())))))
                elif nxt in on_stack:
                    low[node] = min(low[node], index[nxt])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                comp = []
                while True:
                    w = stack.pop()
                    on_stack.discard(w)
                    comp.append(w)
                    if w == node:
                        break
                if len(comp) > 1:
                    out.append(sorted(comp))
    return out


def _layer(module: str) -> int:
    best, best_len = None, -1
    for i, prefixes in enumerate(LAYERS):
        for p in prefixes:
            if (module == p or module.startswith(p + ".")) and len(p) > best_len:
                best, best_len = i, len(p)
    assert best is not None, f"{module} is in no layer; add it to LAYERS in {__file__}"
    return best


def test_the_cycle_finder_finds_a_planted_cycle():
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}, "e": set()}
    assert _cycles(graph) == [["a", "b", "c"]]
    assert _cycles({"a": {"b"}, "b": set()}) == []


def test_the_import_reader_sees_deferred_and_relative_imports(tmp_path):
    src = tmp_path / "m.py"
    src.write_text("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    import x.hidden\n"
                   "def f():\n    from x.y import thing\n    from . import z\n")
    assert _imports("x.m", src, {"x", "x.y", "x.z", "x.hidden", "x.m"}) == {"x.y", "x.z"}


def test_no_import_cycles_in_the_package():
    cycles = _cycles(_graph())
    assert not cycles, "import cycles (module groups that import each other): " + "; ".join(
        " <-> ".join(c) for c in cycles)


def test_imports_only_go_down_the_layers():
    graph = _graph()
    bad = [f"{m} (layer {_layer(m)}) imports {d} (layer {_layer(d)})"
           for m, deps in sorted(graph.items()) for d in sorted(deps) if _layer(d) > _layer(m)]
    assert not bad, "imports that go up the layers:\n" + "\n".join(bad)


@pytest.mark.parametrize("pkg", PACKAGES)
def test_no_module_over_500_lines(pkg):
    long = {str(p.relative_to(ROOT)): n for p in (ROOT / pkg).rglob("*.py")
            if (n := len(p.read_text().splitlines())) > MAX_LINES}
    assert not long, f"modules over {MAX_LINES} lines (cut them along their seams): {long}"
