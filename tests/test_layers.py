"""The import direction of the package: model <- drive <- run <- entry points, and no circle.

Read from the source with :mod:`ast` (every import statement, at module level
or inside a function), so a lazy import cannot hide an upward dependency.

* ``harness.model``: plain data and pure logic; imports only ``harness.model``
  (and ``harness`` itself for the version), and nothing that does I/O or reads
  a clock.
* ``harness.drive``: what touches the OS; imports ``harness.model`` and itself.
* ``harness.run``: combines them; imports model, drive, itself and ``strategies``.
* ``strategies``: imports only ``harness.model`` and itself.
* The entry points (``harness.cli``, ``harness.pytest_plugin``, ``harness.suite``,
  ``harness.options``) may import anything below them.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("harness", "strategies")

# For each layer, the layers (module prefixes) it may import from the project.
ALLOWED: dict[str, tuple[str, ...]] = {
    "harness.model": ("harness.model",),
    "harness.drive": ("harness.model", "harness.drive"),
    "harness.run": ("harness.model", "harness.drive", "harness.run", "strategies"),
    "strategies": ("harness.model", "strategies"),
}
# What "pure" forbids in the model: sockets, processes, the clock, the file system's state.
IMPURE = ("socket", "selectors", "subprocess", "psutil", "time", "scapy", "threading", "signal")


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def project_modules() -> dict[str, Path]:
    return {module_name(p): p for pkg in PACKAGES for p in sorted((ROOT / pkg).rglob("*.py"))}


def imports_of(name: str, path: Path) -> set[str]:
    """Every module ``name`` imports (absolute names; relative imports resolved)."""
    tree = ast.parse(path.read_text(), str(path))
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")
                anchor = anchor[: len(anchor) - node.level + 1]
                base = ".".join([*anchor, base] if base else anchor)
            found.add(base)
            # "from harness.drive import executor" imports a module too.
            found.update(f"{base}.{alias.name}" for alias in node.names)
    return found


def layer_of(name: str) -> str | None:
    return next((layer for layer in ALLOWED if name == layer or name.startswith(layer + ".")), None)


MODULES = project_modules()
GRAPH = {
    name: {imp for imp in imports_of(name, path) if imp in MODULES and imp != name}
    for name, path in MODULES.items()
}


def upward_imports(name: str, imported: set[str]) -> list[str]:
    """The project modules in ``imported`` that ``name``'s layer may not import."""
    layer = layer_of(name)
    assert layer is not None
    allowed = ALLOWED[layer]
    return sorted(
        imp
        for imp in imported
        if imp != "harness" and not any(imp == a or imp.startswith(a + ".") for a in allowed)
    )


@pytest.mark.parametrize("name", sorted(n for n in MODULES if layer_of(n) is not None))
def test_layer_imports_only_downward(name: str) -> None:
    upward = upward_imports(name, GRAPH[name])
    assert not upward, f"{name} (layer {layer_of(name)}) imports {upward}; see this module's docstring"


@pytest.mark.parametrize("name", sorted(n for n in MODULES if layer_of(n) == "harness.model"))
def test_model_does_no_io(name: str) -> None:
    impure = sorted(imp for imp in imports_of(name, MODULES[name]) if imp.split(".")[0] in IMPURE)
    assert not impure, f"{name} is in the model layer but imports {impure}"


def test_no_circle_of_imports() -> None:
    """Depth-first search for a back edge; the circle is named when found."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for nxt in sorted(GRAPH[node]):
            if state.get(nxt) == 1:
                return [*path[path.index(nxt) :], nxt]
            if nxt not in state and (circle := visit(nxt)):
                return circle
        state[node] = 2
        path.pop()
        return None

    for start in sorted(GRAPH):
        if start not in state and (circle := visit(start)):
            pytest.fail("a circle of imports: " + " -> ".join(circle))


def test_the_checker_sees_an_upward_import(tmp_path: Path) -> None:
    """The rules above can fail: a model module importing a driver is caught."""
    bad = tmp_path / "bad.py"
    bad.write_text("from harness.drive.process import ServerProcess\nimport harness.run.checker as c\n")
    found = {imp for imp in imports_of("harness.model.bad", bad) if imp in MODULES}
    assert upward_imports("harness.model.bad", found) == ["harness.drive.process", "harness.run.checker"]
