"""The import graph of first-party modules, for tests/test_code_quality.py: circles between
modules and imports of another module's private names.

A module is a ``(dotted name, file)`` pair, as ``test_code_quality.modules()`` yields them."""

from __future__ import annotations

import ast
from collections import deque
from collections.abc import Iterable, Iterator
from pathlib import Path

Module = tuple[str, Path]


def from_base(name: str, path: Path, node: ast.ImportFrom) -> str:
    """The absolute module of ``from X import ...`` in module ``name`` (relative X resolved)."""
    if not node.level:
        return node.module or ""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    parts = package.split(".")
    anchor = parts[: len(parts) - node.level + 1]
    return ".".join(anchor + ([node.module] if node.module else []))


def is_type_checking(test: ast.expr) -> bool:
    """``if TYPE_CHECKING:`` or ``if typing.TYPE_CHECKING:``."""
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def import_nodes(
    nodes: Iterable[ast.AST], with_typing: bool
) -> Iterator[ast.Import | ast.ImportFrom]:
    """Every import statement at any depth (function bodies too); the body of an
    ``if TYPE_CHECKING:`` is left out unless ``with_typing`` (its ``else:`` runs, so it counts)."""
    for node in nodes:
        if isinstance(node, ast.Import | ast.ImportFrom):
            yield node
        elif isinstance(node, ast.If) and is_type_checking(node.test) and not with_typing:
            yield from import_nodes(node.orelse, with_typing)
        else:
            yield from import_nodes(ast.iter_child_nodes(node), with_typing)


def parse(path: Path) -> ast.Module:
    return ast.parse(path.read_text(), str(path))


def resolve(target: str, known: set[str]) -> str | None:
    """The longest known module that ``target`` names: ``pkg.mod.func`` -> ``pkg.mod``,
    ``pkg.func`` -> ``pkg`` (the package's ``__init__``)."""
    while target and target not in known:
        target = target.rpartition(".")[0]
    return target or None


def import_graph(mods: list[Module]) -> dict[str, set[str]]:
    """module -> the modules it imports at run time (lazy imports included)."""
    known = {name for name, _ in mods}
    graph: dict[str, set[str]] = {name: set() for name in known}
    for name, path in mods:
        for node in import_nodes([parse(path)], with_typing=False):
            if isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            else:  # `from X import a`: X.a when that is a module, else X
                base = from_base(name, path, node)
                targets = [f"{base}.{alias.name}" for alias in node.names]
            for target in targets:
                found = resolve(target, known)
                if found is not None and found != name:
                    graph[name].add(found)
    return graph


def components(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components (Tarjan), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    out: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        for w in sorted(graph[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = stack[stack.index(v) :]
            del stack[stack.index(v) :]
            out.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return out


def shortest_cycle(graph: dict[str, set[str]], start: str, within: set[str]) -> tuple[str, ...]:
    """The fewest-hop circle from ``start`` back to it inside one component, rotated so that
    its smallest module comes first."""
    prev = {start: start}
    queue = deque([start])
    while queue:
        v = queue.popleft()
        for w in sorted(graph[v] & within):
            if w == start:
                chain = [v]
                while chain[-1] != start:
                    chain.append(prev[chain[-1]])
                cycle = chain[::-1]
                first = cycle.index(min(cycle))
                return tuple(cycle[first:] + cycle[:first])
            if w not in prev:
                prev[w] = v
                queue.append(w)
    raise AssertionError(f"{start} is in no circle")  # cannot happen in a component of 2+


def import_cycles(mods: list[Module]) -> list[str]:
    """One ``a -> b -> a`` line per distinct circle: for every module of a strongly connected
    component, the shortest circle through it (so every module in a circle is named)."""
    graph = import_graph(mods)
    found: set[tuple[str, ...]] = set()
    for component in components(graph):
        if len(component) > 1:
            found.update(shortest_cycle(graph, v, set(component)) for v in component)
    return sorted(" -> ".join((*cycle, cycle[0])) for cycle in found)


def is_private(name: str) -> bool:
    return name.startswith("_") and not (name.startswith("__") and name.endswith("__"))


def private_imports(mods: list[Module], root: Path, first_party: tuple[str, ...]) -> list[str]:
    """``from X import _name`` of a first-party X by any other module (``if TYPE_CHECKING:``
    and function-level imports included)."""
    found = []
    for name, path in mods:
        for node in import_nodes([parse(path)], with_typing=True):
            if not isinstance(node, ast.ImportFrom):
                continue
            base = from_base(name, path, node)
            if base == name or base.split(".")[0] not in first_party:
                continue
            for alias in node.names:
                if is_private(alias.name):
                    where = f"{path.relative_to(root)}:{node.lineno}"
                    found.append(f"{where} imports {alias.name} from {base}")
    return found
