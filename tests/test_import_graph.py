"""What trivy's modules import: no import cycles, and no undeclared distribution.

The graph is read from the source (``ast``), so it holds every import a
module makes: at the top, in functions, and under ``if TYPE_CHECKING:``
(a cycle there is still two modules that need each other). Relative
imports are resolved; ``from . import x`` counts as importing the module
``x`` when there is one, else the package.
"""

from __future__ import annotations

import ast
import re
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

import trivy

PACKAGE = Path(trivy.__file__).parent
ROOT = PACKAGE.parent

#: The parts of trivy checked for cycles: each name covers its submodules
#: (every cycle through one of them fails).
CYCLE_FREE = ["trivy"]


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


MODULES = {_module_name(path): path for path in sorted(PACKAGE.rglob("*.py"))}


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _import_nodes(
    tree: ast.AST, typing_only: bool = False
) -> Iterator[tuple[ast.Import | ast.ImportFrom, bool]]:
    """Every import statement, and whether it is under ``if TYPE_CHECKING:``."""
    if isinstance(tree, ast.Import | ast.ImportFrom):
        yield tree, typing_only
    for child in ast.iter_child_nodes(tree):
        in_typing = typing_only
        if isinstance(tree, ast.If) and _is_type_checking(tree.test):
            in_typing = typing_only or child in tree.body
        yield from _import_nodes(child, in_typing)


def _owner(name: str) -> str | None:
    """The trivy module ``name`` is, or is in (None outside trivy)."""
    while name and name not in MODULES:
        name = name.rpartition(".")[0]
    return name or None


def imports_of(module: str) -> set[str]:
    """The trivy modules ``module`` imports (itself excluded)."""
    path = MODULES[module]
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found: set[str] = set()
    for node, _typing_only in _import_nodes(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        else:
            base = node.module or ""
            if node.level:
                anchor = package.split(".")
                anchor = anchor[: len(anchor) - (node.level - 1)]
                base = ".".join([*anchor, *([base] if base else [])])
            # from PKG import x: the module PKG.x if there is one, else PKG
            names = [
                f"{base}.{alias.name}" if f"{base}.{alias.name}" in MODULES else base
                for alias in node.names
            ]
        found.update(owner for owner in map(_owner, names) if owner is not None)
    found.discard(module)
    return found


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The import cycles of ``graph``: its strongly connected components of
    more than one module (Tarjan's algorithm), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for target in sorted(graph.get(node, ())):
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in on_stack:
                low[node] = min(low[node], index[target])
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

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def _in(module: str, scope: str) -> bool:
    return module == scope or module.startswith(scope + ".")


@pytest.mark.parametrize("scope", CYCLE_FREE)
def test_no_import_cycle(scope: str) -> None:
    graph = {module: imports_of(module) for module in MODULES}
    assert [c for c in cycles(graph) if any(_in(module, scope) for module in c)] == []


def test_the_graph_sees_every_kind_of_import() -> None:
    # relative, from a sibling module and from the parent package
    assert {"trivy.compat._bridge", "trivy"} <= imports_of("trivy.compat._server")
    assert "trivy._open" in imports_of("trivy.compat._server")  # from .._open import run_bus
    assert "trivy.protocol" in imports_of("trivy._discovery")  # from . import protocol
    assert "trivy.compat._server" in imports_of("trivy.compat._timer")  # under TYPE_CHECKING
    assert "trivy._bus" in imports_of("trivy")  # the package's __init__


def test_cycles_finds_every_cycle_and_only_cycles() -> None:
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a", "d"}, "d": set(), "e": {"f"}, "f": {"e"}}
    assert cycles(graph) == [["a", "b", "c"], ["e", "f"]]
    assert cycles({"a": {"b"}, "b": {"c"}, "c": set()}) == []


#: Third-party imports that are not runtime dependencies, and where they
#: may be: pytest loads trivy's pytest plugin itself; ivy-python is needed
#: only by the process that runs a real ivy-python agent for tests; the
#: MQTT client only by the bridge (the ``mqtt`` extra); the web stack only by
#: the monitor's (the ``monitor`` extra); Qt only by its guest-mode host
#: (the ``gui`` extra).
NOT_DEPENDENCIES = {
    "pytest": {"trivy.testing._plugin"},
    "ivy": {"trivy.testing._ivy_python_process"},
    "paho": {"trivy.bridge._mqtt"},
    "starlette": {"trivy.monitor._web"},
    "hypercorn": {"trivy.monitor"},
    "PySide6": {"trivy.gui.qt"},
}
#: The extras: what each stands on (trivy's public API), and nothing else
#: of trivy; the core imports none of them.
EXTRAS = ["trivy.bridge", "trivy.monitor", "trivy.gui"]


@pytest.mark.parametrize("extra", EXTRAS)
def test_extras_stand_on_the_public_api_and_the_core_never_imports_them(extra: str) -> None:
    public = {"trivy", "trivy.protocol"}
    for module in MODULES:
        trivy_imports = {m for m in imports_of(module) if _in(m, "trivy")}
        if _in(module, extra):
            assert trivy_imports <= public | {m for m in MODULES if _in(m, extra)}, module
        elif not module.startswith("trivy._cli"):  # (the command line runs it, lazily)
            assert not {m for m in trivy_imports if _in(m, extra)}, module


def test_every_third_party_import_is_a_declared_dependency() -> None:
    tomllib = pytest.importorskip("tomllib")  # (Python 3.11+)
    project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    # "name>=1.0; marker": the name
    declared = {re.split(r"[^\w.-]", r, maxsplit=1)[0].lower() for r in project["dependencies"]}
    undeclared = set()
    for module, path in MODULES.items():
        for node, typing_only in _import_nodes(ast.parse(path.read_text(encoding="utf-8"))):
            if typing_only or (isinstance(node, ast.ImportFrom) and node.level):
                continue  # only for type checkers; ours
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else [node.module]
            for name in names:
                top = (name or "").partition(".")[0]
                if top in sys.stdlib_module_names or top == "trivy" or top in declared:
                    continue
                if module not in NOT_DEPENDENCIES.get(top, ()):
                    undeclared.add((module, top))
    assert undeclared == set()
