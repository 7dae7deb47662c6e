"""The shape of wren-core (see ARCHITECTURE.md): no import cycles between modules, no large
tangles even through imports inside functions, no oversized classes or modules. The layering
itself is an import-linter contract in pyproject.toml, checked by ``nox -s lint``."""
from __future__ import annotations

import ast
import pathlib

import wren

SRC = pathlib.Path(wren.__file__).parent
MAX_CLASS_LINES = 400
MAX_MODULE_LINES = 600
MAX_TANGLE = 4


def _modules() -> dict[str, ast.Module]:
    out = {}
    for path in sorted(SRC.rglob("*.py")):
        rel = path.relative_to(SRC.parent).with_suffix("")
        parts = list(rel.parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        out[".".join(parts)] = ast.parse(path.read_text(), str(path))
    return out


MODULES = _modules()


def _resolve(name: str) -> str | None:
    """The wren module ``name`` refers to (a name imported from a module maps to the module)."""
    while name and name not in MODULES:
        name = name.rpartition(".")[0]
    return name or None


def _imports(node: ast.AST, module: str, top_level_only: bool) -> set[str]:
    found: set[str] = set()

    def visit(n: ast.AST) -> None:
        for child in ast.iter_child_nodes(n):
            if top_level_only and isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)):
                continue
            if isinstance(child, ast.Import):
                for alias in child.names:
                    if alias.name.startswith("wren."):
                        found.add(alias.name)
            elif isinstance(child, ast.ImportFrom) and child.module:
                base = child.module
                if child.level:  # relative import
                    pkg = module.split(".")[: -child.level] if not _is_package(module) else module.split(".")[: len(module.split(".")) - child.level + 1]
                    base = ".".join(pkg + [child.module])
                if base == "wren" or base.startswith("wren."):
                    for alias in child.names:
                        found.add(f"{base}.{alias.name}")
            visit(child)

    visit(node)
    targets = {_resolve(n) for n in found}
    return {t for t in targets if t and t != module and t != "wren"}


def _is_package(module: str) -> bool:
    return (SRC.parent / module.replace(".", "/") / "__init__.py").exists()


def _graph(top_level_only: bool) -> dict[str, set[str]]:
    return {m: _imports(tree, m, top_level_only) for m, tree in MODULES.items() if m != "wren"}


def _sccs(graph: dict[str, set[str]]) -> list[set[str]]:
    """Strongly connected components (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    out: list[set[str]] = []
    counter = [0]

    def strong(v: str) -> None:
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on_stack.add(v)
        for w in graph.get(v, ()):
            if w not in graph:
                continue
            if w not in index:
                strong(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = set()
            while True:
                w = stack.pop()
                on_stack.discard(w)
                comp.add(w)
                if w == v:
                    break
            out.append(comp)

    for v in sorted(graph):
        if v not in index:
            strong(v)
    return out


def test_the_analysis_sees_imports():
    graph = _graph(top_level_only=False)
    assert "wren.client.submission" in graph["wren.executor"]
    assert "wren.records" in graph["wren.worker.runtime"]
    assert "wren.partitioner" in graph["wren.worker.runtime"]  # an import inside a function
    assert "wren.partitioner" not in _graph(top_level_only=True)["wren.worker.runtime"]


def test_no_import_cycle_at_module_level():
    """Counting imports under ``if TYPE_CHECKING:`` too."""
    cycles = [c for c in _sccs(_graph(top_level_only=True)) if len(c) > 1]
    assert cycles == []


def test_no_tangle_of_more_than_four_modules_even_through_function_imports():
    tangles = [sorted(c) for c in _sccs(_graph(top_level_only=False)) if len(c) > MAX_TANGLE]
    assert tangles == []


def test_no_oversized_class_or_module():
    big = []
    for module, tree in MODULES.items():
        lines = len((SRC.parent / (module.replace(".", "/") + ".py")).read_text().splitlines()) if not _is_package(module) else 0
        if lines > MAX_MODULE_LINES:
            big.append(f"module {module}: {lines} lines")
        for node in ast.walk(tree):
            if isinstance(node, ast.ClassDef) and node.end_lineno - node.lineno + 1 > MAX_CLASS_LINES:
                big.append(f"class {module}.{node.name}: {node.end_lineno - node.lineno + 1} lines")
    assert big == []
