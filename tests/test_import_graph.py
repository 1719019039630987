"""The import graph of the package: no cycles, function-local imports included; the runtime never
reaches into the zoo or the export.

The graph is built from the source (ast), not by importing: every `import cmhash...` and
`from ... import ...` at any depth (module level, inside functions, under `if TYPE_CHECKING`) is an
edge. `from cmhash.x import y` is an edge to `cmhash.x.y` when y is a submodule, else to `cmhash.x`.
Why function-local imports count: they are how a cycle hides; the modules still depend on each other.
"""

from __future__ import annotations

import ast
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
# The folders of the packages (setup.py ROOTS): the mapping from module names to files.
ROOTS = {"cmhash": "cmhash", "cmhash.zoo": "zoo", "cmhash.export": "export", "cmhash.runtime": "runtime"}


def modules() -> dict[str, Path]:
    """Every module of the package: dotted name -> source file (a package is its __init__.py)."""
    found: dict[str, Path] = {}
    for package, folder in ROOTS.items():
        for path in sorted((REPO / folder).rglob("*.py")):
            parts = list(path.relative_to(REPO / folder).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts = parts[:-1]
            found[".".join([package, *parts])] = path
    return found


def _resolve(name: str, path: Path, node: ast.ImportFrom) -> str:
    """The absolute module an ImportFrom names (relative imports resolved against `name`)."""
    if not node.level:
        return node.module or ""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    for _ in range(node.level - 1):
        package = package.rpartition(".")[0]
    return f"{package}.{node.module}" if node.module else package


def _owner(target: str, known: dict[str, Path]) -> str | None:
    """The longest known module that `target` names or lies in (`cmhash.zoo.x.func` -> `cmhash.zoo.x`)."""
    while target:
        if target in known:
            return target
        target = target.rpartition(".")[0]
    return None


def graph() -> dict[str, set[str]]:
    """module -> the cmhash modules it imports anywhere in its body."""
    known = modules()
    edges: dict[str, set[str]] = {name: set() for name in known}
    for name, path in known.items():
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            targets: list[str] = []
            if isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = _resolve(name, path, node)
                targets = [f"{base}.{alias.name}" if f"{base}.{alias.name}" in known else base
                           for alias in node.names]
            for target in targets:
                owner = _owner(target, known) if target.split(".")[0] == "cmhash" else None
                if owner is not None and owner != name:
                    edges[name].add(owner)
    return edges


def cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components with more than one module (Tarjan, iterative), sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []
    counter = 0
    for root in sorted(edges):
        if root in index:
            continue
        work = [(root, iter(sorted(edges[root])))]
        index[root] = low[root] = counter
        counter += 1
        stack.append(root)
        on_stack.add(root)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = counter
                    counter += 1
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(edges[child]))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                component = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.append(member)
                    if member == node:
                        break
                if len(component) > 1:
                    found.append(sorted(component))
    return sorted(found)


def _describe(component: list[str], edges: dict[str, set[str]]) -> str:
    members = set(component)
    inner = [f"{a} -> {b}" for a in component for b in sorted(edges[a] & members)]
    return "{" + ", ".join(component) + "}: " + "; ".join(inner)


# ------------------------------------------------------------------------------------------- tests


def test_the_graph_sees_every_kind_of_import():
    """Guards the parser itself on known edges: relative, function-local, and `from pkg import submodule`."""
    edges = graph()
    assert len(edges) > 100
    assert "cmhash.errors" in edges["cmhash.runtime.io"] or "cmhash.errors" in edges["cmhash.runtime.index"]
    assert "cmhash.zoo.data.registry" in edges["cmhash.zoo.data"]  # `from .registry import ...` in __init__
    assert "cmhash.commands.train" in edges["cmhash.cli"]  # `from cmhash.commands import train as ...`
    assert "cmhash.doctor" in edges["cmhash.cli"]  # imported inside a function body


def test_tarjan_finds_a_cycle_and_only_cycles():
    edges = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}, "e": {"e"}, "f": set()}
    assert cycles(edges) == [["a", "b", "c"]]


def test_the_package_has_no_import_cycles():
    edges = graph()
    found = cycles(edges)
    assert not found, "import cycles (each a strongly connected component):\n" + "\n".join(
        _describe(c, edges) for c in found)


def test_the_runtime_imports_neither_the_zoo_nor_the_export():
    edges = graph()
    bad = sorted(f"{a} -> {b}" for a, targets in edges.items() if a.startswith("cmhash.runtime")
                 for b in targets if b.startswith(("cmhash.zoo", "cmhash.export")))
    assert not bad, "runtime must stay torch-free and standalone:\n" + "\n".join(bad)
