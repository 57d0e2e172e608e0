"""The package's shape: no import cycles between its modules, and no module too long to read without a reason."""

from __future__ import annotations

import ast
from pathlib import Path

import steplens

ROOT = Path(steplens.__file__).parent
MAX_LINES = 400
LONG_REASON = "# long module:"  # within the first 15 lines: why this file stays in one piece


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def modules() -> dict[str, Path]:
    return {module_name(p): p for p in sorted(ROOT.rglob("*.py"))}


def imports_of(name: str, path: Path, known: set[str]) -> set[str]:
    """The package modules `name` imports anywhere in its file (module level or inside functions)."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    out: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - node.level + 1]
                src = ".".join(base + ([node.module] if node.module else []))
            else:
                src = node.module or ""
            # `from pkg import sub` imports the submodule; `from pkg import name` imports pkg
            targets = [f"{src}.{a.name}" if f"{src}.{a.name}" in known else src for a in node.names]
        else:
            continue
        out.update(t for t in targets if t in known and t != name)
    return out


def import_graph() -> dict[str, set[str]]:
    mods = modules()
    return {name: imports_of(name, path, set(mods)) for name, path in mods.items()}


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    out: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in sorted(graph.get(v, ())):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return out


def test_cycle_finder_finds_a_constructed_cycle():
    g = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}, "e": set()}
    assert cycles(g) == [["a", "b", "c"]]
    assert cycles({"a": {"b"}, "b": set()}) == []


def test_imports_are_read_at_every_level(tmp_path):
    f = tmp_path / "m.py"
    f.write_text("from .a import x\ndef f():\n    from ..b import y\n    import steplens.c\nfrom . import d\n")
    known = {"steplens.p.a", "steplens.b", "steplens.c", "steplens.p.d", "steplens.p"}
    assert imports_of("steplens.p.m", f, known) == {"steplens.p.a", "steplens.b", "steplens.c", "steplens.p.d"}


def test_no_import_cycles():
    graph = import_graph()
    assert "steplens.models.dit" in graph and graph["steplens.train"]  # the walk found the package
    assert cycles(graph) == []


def test_models_import_nothing_from_training():
    graph = import_graph()
    for name, deps in graph.items():
        if name.startswith("steplens.models"):
            assert "steplens.train" not in deps, name



def test_long_modules_say_why():
    long = []
    for name, path in modules().items():
        lines = path.read_text().splitlines()
        if len(lines) > MAX_LINES and not any(line.startswith(LONG_REASON) for line in lines[:15]):
            long.append(f"{name} ({len(lines)} lines)")
    assert long == []
