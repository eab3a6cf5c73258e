"""No import circle in the package and no module over the size one reading holds.

The graph is read from the source with ast: every `import` and `from ... import` of a resnetlab
module, at module level or inside a function (a deferred import is still a dependency, and a
circle of them is how `bench -> quantize -> bench` hid). `from .pkg import name` counts as an edge
to the submodule `pkg.name` where that is a module, else to `pkg`. Run as a script it prints every
circle in the whole package: `python tests/test_package_layout.py`.
"""

from __future__ import annotations

import ast
import sys
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "resnetlab"
MAX_LINES = 420  # "about 400"


def module_names(root: Path = PACKAGE) -> dict[str, Path]:
    """Dotted module name -> file, for every .py file of the package."""
    out = {}
    for path in sorted(root.rglob("*.py")):
        parts = list(path.relative_to(root.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        out[".".join(parts)] = path
    return out


def _target(base: str, name: str, modules: dict[str, Path]) -> str | None:
    full = f"{base}.{name}" if base else name
    if full in modules:
        return full
    return base if base in modules else None


def imports_of(module: str, path: Path, modules: dict[str, Path]) -> set[str]:
    """The resnetlab modules `module` imports, anywhere in its file."""
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name in modules:
                    found.add(alias.name)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base_parts = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                base = ".".join(base_parts + ([node.module] if node.module else []))
            else:
                base = node.module or ""
            if not base.startswith("resnetlab"):
                continue
            for alias in node.names:
                t = _target(base, alias.name, modules)
                if t is not None:
                    found.add(t)
    found.discard(module)
    return found


def import_graph(root: Path = PACKAGE) -> dict[str, set[str]]:
    """Module -> the resnetlab modules it imports."""
    modules = module_names(root)
    return {m: imports_of(m, p, modules) for m, p in modules.items()}


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components with more than one module (Tarjan), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    out: list[list[str]] = []
    counter = [0]

    def visit(v: str) -> None:
        index[v] = low[v] = counter[0]
        counter[0] += 1
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

    sys.setrecursionlimit(max(sys.getrecursionlimit(), 10_000))
    for v in sorted(graph):
        if v not in index:
            visit(v)
    return sorted(out)


def test_no_import_circle_in_the_package():
    assert cycles(import_graph()) == []


def test_a_circle_is_found_where_there_is_one():
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert cycles(graph) == [["a", "b", "c"]]


def test_modules_stay_readable_in_one_sitting():
    long = {
        str(p.relative_to(PACKAGE.parent)): n
        for p in module_names().values()
        if (n := len(p.read_text().splitlines())) > MAX_LINES
    }
    assert long == {}


def test_workflows_sit_above_the_int8_building_blocks():
    graph = import_graph()
    assert "resnetlab.infer.int8" in graph["resnetlab.infer.bench_paths"]
    assert "resnetlab.infer.int8" in graph["resnetlab.infer.quantize"]
    below = {"resnetlab.infer.bench", "resnetlab.infer.bench_paths", "resnetlab.infer.quantize"}
    assert not graph["resnetlab.infer.int8"] & below


if __name__ == "__main__":
    found = cycles(import_graph())
    for c in found:
        print("circle: " + " <-> ".join(c))
    print(f"{len(found)} circle(s) in {PACKAGE}")
    sys.exit(1 if found else 0)
