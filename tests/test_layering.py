"""The import graph of vlp runs one way down (DESIGN.md, "Layering"), with no cycle.

Every module of ``vlp`` is parsed with ``ast`` (nothing is imported), and every import is
collected: module level, inside functions and classes, and under ``if TYPE_CHECKING:`` (a
type-only import still ties the lower layer to the upper one). Names a package imports
lazily count too: the module strings given to ``importlib.import_module`` and to
:func:`vlp._lazy.lazy_getattr`. The only imports allowed to point upward are deprecated
aliases (``deprecated=`` of ``lazy_getattr``, ``deprecated_getattr``,
``deprecated_modules``): an old path must resolve into the room its name moved to, and
only does so when a user touches the old name.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "vlp"

#: Layer of every top-level unit of vlp (a subpackage or a top-level module). A unit may
#: import units of its own layer or below, never above.
LAYERS: dict[str, int] = {
    # private helpers at the bottom: they import nothing from vlp but each other
    "_checks": 0,
    "_deprecated": 0,
    "_lazy": 0,
    "_hub": 0,  # save_pretrained / from_pretrained for the weight-carrying modules
    "_patches": 1,
    "distributed": 1,
    "kernels": 2,
    # functional ops
    "losses": 3,
    "masking": 3,
    "augment": 3,
    "negatives": 3,
    "eval": 3,
    "data": 3,
    "testing": 3,
    "optim": 3,
    # modules: parts of a user's model
    "heads": 4,
    "adapters": 4,
    # whole models
    "models": 5,
}

_LAZY_CALLS = {"import_module", "lazy_getattr", "__import__"}
_DEPRECATED_CALLS = {"deprecated_getattr", "deprecated_modules", "moved"}


@dataclass(frozen=True)
class Edge:
    importer: str
    imported: str
    line: int
    deprecated: bool = False


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _modules() -> dict[str, Path]:
    return {_module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


MODULES = _modules()


def _resolve(name: str) -> str | None:
    """The vlp module an import of ``name`` loads: the longest existing module prefix."""
    parts = name.split(".")
    while parts:
        candidate = ".".join(parts)
        if candidate in MODULES:
            return candidate
        parts.pop()
    return None


def _vlp_strings(node: ast.AST) -> Iterator[str]:
    for sub in ast.walk(node):
        if isinstance(sub, ast.Constant) and isinstance(sub.value, str):
            text = sub.value.partition(":")[0]
            if text.startswith("vlp.") and _resolve(text):
                yield text


def _call_name(node: ast.Call) -> str:
    func = node.func
    if isinstance(func, ast.Attribute):
        return func.attr
    return func.id if isinstance(func, ast.Name) else ""


def _edges(module: str, path: Path) -> Iterator[Edge]:
    tree = ast.parse(path.read_text(), filename=str(path))
    is_package = path.name == "__init__.py"
    package = module if is_package else module.rpartition(".")[0]
    deprecated_nodes: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and _call_name(node) in _DEPRECATED_CALLS:
            deprecated_nodes.update(id(n) for n in ast.walk(node))
        if isinstance(node, ast.Call) and _call_name(node) == "lazy_getattr":
            for kw in node.keywords:
                if kw.arg == "deprecated":
                    deprecated_nodes.update(id(n) for n in ast.walk(kw.value))
    for node in ast.walk(tree):
        names: list[str] = []
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - (node.level - 1)]
                source = ".".join([*base, node.module] if node.module else base)
            else:
                source = node.module or ""
            # ``from vlp.x import y`` loads vlp.x.y when y is a submodule
            names = [f"{source}.{alias.name}" for alias in node.names] or [source]
            names = [n if _resolve(n) == n else source for n in names]
        elif isinstance(node, ast.Call) and _call_name(node) in _LAZY_CALLS:
            for arg in [*node.args, *(kw.value for kw in node.keywords)]:
                for text in _vlp_strings(arg):
                    if id(arg) not in deprecated_nodes:
                        names.append(text)
        elif isinstance(node, ast.Call) and _call_name(node) in _DEPRECATED_CALLS:
            for text in _vlp_strings(node):
                yield Edge(module, _resolve(text) or text, node.lineno, deprecated=True)
            continue
        for name in names:
            target = _resolve(name)
            if target is not None and target != module:
                yield Edge(module, target, getattr(node, "lineno", 0))
        if isinstance(node, ast.Call) and _call_name(node) == "lazy_getattr":
            for kw in node.keywords:
                if kw.arg == "deprecated":
                    for text in _vlp_strings(kw.value):
                        yield Edge(module, _resolve(text) or text, node.lineno, deprecated=True)


def _unit(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else ""


EDGES = [edge for module, path in MODULES.items() for edge in _edges(module, path)]


def test_every_unit_has_a_layer() -> None:
    """A new subpackage or top-level module gets its place in LAYERS (DESIGN.md's order)."""
    units = {_unit(m) for m in MODULES} - {""}
    assert units == set(LAYERS), (
        f"add new subpackages to LAYERS: {sorted(units - set(LAYERS))}; "
        f"stale entries: {sorted(set(LAYERS) - units)}"
    )


def test_the_walk_sees_the_known_imports() -> None:
    """The walker finds imports of every kind (a guard against a walker that sees nothing)."""
    pairs = {(e.importer, e.imported) for e in EDGES if not e.deprecated}
    # module level, ``from vlp.x import name``
    assert ("vlp.masking.cluster", "vlp.kernels.cluster_scores") in pairs
    # function level
    assert ("vlp.data.shapes.dataset", "vlp.data.wds") in pairs
    # a lazy table: vlp.data loads vlp.data.wds on first use
    assert ("vlp.data", "vlp.data.wds") in pairs
    # ``from vlp import _checks``
    assert ("vlp.kernels.contrastive", "vlp._checks") in pairs
    deprecated = {(e.importer, e.imported) for e in EDGES if e.deprecated}
    assert ("vlp.heads", "vlp.models.ssmke") in deprecated
    assert len(pairs) > 100


def _upward(edge: Edge) -> bool:
    src, dst = _unit(edge.importer), _unit(edge.imported)
    if not src or not dst or src == dst:
        return False
    return LAYERS[dst] > LAYERS[src]


def test_no_import_goes_upward() -> None:
    upward = sorted(
        {(e.importer, e.imported, e.line) for e in EDGES if not e.deprecated and _upward(e)}
    )
    assert not upward, "imports against the layer order (importer, imported, line):\n" + "\n".join(
        map(str, upward)
    )


def _cycle(graph: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return [*stack[stack.index(nxt) :], nxt]
            if nxt not in state and (found := visit(nxt)):
                return found
        stack.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (found := visit(node)):
            return found
    return None


def test_no_cycle_among_subpackages() -> None:
    graph: dict[str, set[str]] = {}
    for e in EDGES:
        src, dst = _unit(e.importer), _unit(e.imported)
        if not e.deprecated and src and dst and src != dst:
            graph.setdefault(src, set()).add(dst)
    assert _cycle(graph) is None, f"import cycle among subpackages: {_cycle(graph)}"


def test_no_cycle_among_modules() -> None:
    """No module imports one that imports it back (at any depth), package inits excepted.

    A package ``__init__`` importing its own submodules while they import siblings through
    the package is the normal shape of a package, so edges into a package ``__init__`` from
    inside that package are left out.
    """
    graph: dict[str, set[str]] = {}
    for e in EDGES:
        inside = e.importer.startswith(e.imported + ".")
        if not e.deprecated and not inside:
            graph.setdefault(e.importer, set()).add(e.imported)
    assert _cycle(graph) is None, f"import cycle among modules: {_cycle(graph)}"


def test_the_rules_catch_a_violation(tmp_path: Path) -> None:
    """An upward import, even inside a function, is reported with its line."""
    bad = tmp_path / "bad.py"
    bad.write_text("def f():\n    from vlp.models import build_ssmke\n    return build_ssmke\n")
    edges = list(_edges("vlp.kernels.bad", bad))
    assert [(e.imported, e.line) for e in edges] == [("vlp.models", 2)]
    assert _upward(edges[0])
    assert _cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]


@pytest.mark.parametrize("edge", [e for e in EDGES if e.deprecated], ids=str)
def test_deprecated_targets_exist(edge: Edge) -> None:
    assert edge.imported in MODULES, f"{edge.importer}:{edge.line} aliases a missing module"
