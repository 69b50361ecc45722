"""The package's layering, checked on its source: no import cycle, and the sampler knows no method."""

from __future__ import annotations

import ast
import pathlib

import pytest

SRC = pathlib.Path(__file__).resolve().parents[1] / "src"


def _modules() -> dict[str, pathlib.Path]:
    """Dotted module name -> file, for every module of the package."""
    out = {}
    for path in sorted((SRC / "emphasize").rglob("*.py")):
        parts = list(path.relative_to(SRC).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        out[".".join(parts)] = path
    return out


def import_graph(modules: dict[str, pathlib.Path]) -> dict[str, set[str]]:
    """Module -> the package modules it imports anywhere in its file (top level or inside functions)."""
    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        edges = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] == "emphasize":
                for alias in node.names:
                    full = f"{node.module}.{alias.name}"
                    edges.add(full if full in modules else node.module)
            elif isinstance(node, ast.Import):
                edges.update(a.name for a in node.names if a.name.split(".")[0] == "emphasize")
        graph[name] = {e for e in edges if e in modules and e != name}
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle as a path of module names, or None (iterative depth-first search)."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    for root in sorted(graph):
        if state.get(root):
            continue
        path, stack = [root], [iter(sorted(graph[root]))]
        state[root] = 1
        while stack:
            nxt = next(stack[-1], None)
            if nxt is None:
                state[path.pop()] = 2
                stack.pop()
            elif state.get(nxt) == 1:
                return path[path.index(nxt) :] + [nxt]
            elif not state.get(nxt):
                state[nxt] = 1
                path.append(nxt)
                stack.append(iter(sorted(graph[nxt])))
    return None


def _imports_under(graph: dict[str, set[str]], package: str) -> dict[str, set[str]]:
    return {m: deps for m, deps in graph.items() if m == package or m.startswith(package + ".")}


def test_find_cycle_finds_a_planted_cycle_and_none_in_a_tree():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": set()}) is None
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]


def test_the_package_has_no_import_cycle():
    cycle = find_cycle(import_graph(_modules()))
    assert cycle is None, " -> ".join(cycle)


@pytest.mark.parametrize(
    ("layer", "forbidden"),
    [
        # the sampler takes generic hooks: no method, attention capture, loss or API in it
        ("emphasize.sampling", ("emphasize.methods", "emphasize.attention", "emphasize.losses", "emphasize.api")),
        # attention capture is below the methods and the API
        ("emphasize.attention", ("emphasize.methods", "emphasize.api", "emphasize.guidance", "emphasize.sampling")),
        # losses are pure functions of attention maps
        ("emphasize.losses", ("emphasize.methods", "emphasize.api", "emphasize.sampling", "emphasize.attention")),
        # the world knows nothing of diffusion methods
        ("emphasize.world", ("emphasize.methods", "emphasize.api", "emphasize.attention", "emphasize.sampling")),
    ],
)
def test_layers_import_nothing_above_them(layer, forbidden):
    graph = import_graph(_modules())
    bad = {
        f"{module} imports {dep}"
        for module, deps in _imports_under(graph, layer).items()
        for dep in deps
        if any(dep == f or dep.startswith(f + ".") for f in forbidden)
    }
    assert not bad, sorted(bad)
