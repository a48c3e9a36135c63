"""The layout's rules, checked on the source: no import circles, the wire defined in one place,
the harness kept to the service's public libraries, modules and functions of a readable size.

Each rule is read off the code with `ast`, so a change that breaks one fails here with the place
named, not in review. See README, Architecture.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SRC = ROOT / "src"
SERVICE = SRC / "cc_executor"
HARNESS = ROOT / "tests" / "stress"

SERVICE_INTERNALS = ("jobs", "server", "process", "tree", "registry")
"""What only the service may import; the harness reaches it through `cc_executor.client`."""

MAX_MODULE_LINES = 600
MAX_FUNCTION_LINES = 80
SIZE_EXEMPT: set[Path] = set()
"""Modules allowed past the limits (none: the home-made dispatcher that was is gone, Dask replaced it)."""


def module_name(path: Path, base: Path) -> str:
    parts = list(path.relative_to(base).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def modules(base: Path, package: Path) -> dict[str, Path]:
    return {module_name(p, base): p for p in sorted(package.rglob("*.py"))}


def imported(path: Path, name: str, is_package: bool) -> Iterator[tuple[str, list[str], int]]:
    """(module, names imported from it, line) for every import in the file, at any depth
    (imports inside functions count: they run too), except under `if TYPE_CHECKING:` (never
    run: annotations only)."""
    here = name if is_package else name.rpartition(".")[0]
    tree = ast.parse(path.read_text())
    typing_only = {id(n) for top in ast.walk(tree) if isinstance(top, ast.If)
                   and getattr(top.test, "id", None) == "TYPE_CHECKING"
                   for stmt in top.body for n in ast.walk(stmt)}
    for node in ast.walk(tree):
        if id(node) in typing_only:
            continue
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield alias.name, [], node.lineno
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = here.split(".")
                base = base[: len(base) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            yield target, [a.name for a in node.names], node.lineno


def import_graph(known: dict[str, Path]) -> dict[str, set[str]]:
    """Module -> modules it makes Python execute. `from pkg import mod` is an edge to
    `pkg.mod` when that is a module; importing `a.b.c` from outside package `a.b` also runs
    `a.b`'s `__init__` (an edge to it), while a module inside `a.b` importing a sibling does
    not re-run it."""
    graph: dict[str, set[str]] = {}
    for name, path in known.items():
        edges: set[str] = set()
        for target, names, _ in imported(path, name, path.name == "__init__.py"):
            hits = [f"{target}.{n}" for n in names if f"{target}.{n}" in known]
            if target in known and len(hits) < len(names) or (target in known and not names):
                hits.append(target)
            for hit in hits:
                edges.add(hit)
                parent = hit.rpartition(".")[0]
                while parent and parent in known and not name.startswith(parent + "."):
                    edges.add(parent)
                    parent = parent.rpartition(".")[0]
        edges.discard(name)
        graph[name] = edges
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Every strongly connected component of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in graph.get(v, ()):
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
                found.append(sorted(comp))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def test_the_service_has_no_import_circles():
    assert cycles(import_graph(modules(SRC, SERVICE))) == []


def test_the_harness_has_no_import_circles():
    assert cycles(import_graph(modules(HARNESS.parent, HARNESS))) == []


def test_the_harness_packages_import_one_way():
    """Between the harness's packages and top-level modules (suite, run, report, history,
    service, model, session...), no circle either: a package is a layer, not a tangle."""
    def part(module: str) -> str:
        return module.split(".")[1] if "." in module else module

    graph: dict[str, set[str]] = {}
    for a, targets in import_graph(modules(HARNESS.parent, HARNESS)).items():
        for b in targets:
            if part(a) != part(b) and b != "stress":
                graph.setdefault(part(a), set()).add(part(b))
    assert cycles(graph) == [], graph


def test_the_cycle_finder_finds_a_circle_through_a_package_init():
    graph = {"p": {"p.a"}, "p.a": {"q"}, "q": {"q.b"}, "q.b": {"p"}, "r": set()}
    assert cycles(graph) == [["p", "p.a", "q", "q.b"]]


def test_the_harness_imports_none_of_the_services_internals():
    internals = {f"cc_executor.{m}" for m in SERVICE_INTERNALS}
    found = []
    for name, path in modules(HARNESS.parent, HARNESS).items():
        for target, names, line in imported(path, name, path.name == "__init__.py"):
            reached = {target} | {f"{target}.{n}" for n in names}
            for hit in reached:
                if any(hit == i or hit.startswith(i + ".") for i in internals):
                    found.append(f"{path.relative_to(ROOT)}:{line}: {hit}")
    assert not found, "use cc_executor.client (or a shared library) instead:\n" + "\n".join(found)


def _builds_wire_dict(node: ast.AST) -> bool:
    return isinstance(node, ast.Dict) and any(
        isinstance(k, ast.Constant) and k.value == "jsonrpc" for k in node.keys)


def test_no_wire_message_is_built_outside_the_protocol_package():
    """No JSON-RPC envelope written out, and none of the encoders that take a free-form payload
    (`notification_json`, `result_json`, `error_json`) called: outside the protocol package,
    messages go out through its models (`notify`, `Request.reply`, `ErrorReply`), in the
    service and in the harness alike."""
    free_form = {"notification_json", "result_json", "error_json"}
    found = []
    paths = [p for p in sorted(SERVICE.rglob("*.py"))
             if "protocol" not in p.relative_to(SERVICE).parts]
    for path in paths + sorted(HARNESS.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if _builds_wire_dict(node):
                found.append(f"{path.relative_to(ROOT)}:{node.lineno}: a JSON-RPC envelope")
            elif isinstance(node, (ast.Attribute, ast.Name)) and (
                    getattr(node, "attr", None) in free_form
                    or getattr(node, "id", None) in free_form):
                found.append(f"{path.relative_to(ROOT)}:{node.lineno}: a free-form encoder")
    assert not found, "build it through cc_executor.protocol's models:\n" + "\n".join(found)


def _sizes(package: Path) -> Iterator[tuple[str, int, int]]:
    """(place, lines, limit) for every module and function of `package`."""
    for path in sorted(package.rglob("*.py")):
        if path in SIZE_EXEMPT:
            continue
        text = path.read_text()
        where = str(path.relative_to(ROOT))
        yield where, len(text.splitlines()), MAX_MODULE_LINES
        for node in ast.walk(ast.parse(text)):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                yield (f"{where}:{node.lineno} {node.name}", node.end_lineno - node.lineno + 1,
                       MAX_FUNCTION_LINES)


@pytest.mark.parametrize("package", [SERVICE, HARNESS], ids=["service", "harness"])
def test_modules_and_functions_stay_readable(package):
    too_big = [f"{where}: {n} lines (limit {limit})" for where, n, limit in _sizes(package)
               if n > limit]
    assert not too_big, "\n".join(too_big)
