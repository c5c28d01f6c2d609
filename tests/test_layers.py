"""The package's import rule: each layer imports only the layers below it (README "Layout").

The layers, lowest first, are listed in `ensemble_instruct_lib.LAYERS`. A module may import
modules of its own layer and of any layer below; an import of a higher layer is a violation, so
import cycles between layers cannot come back. Imports under ``if TYPE_CHECKING:`` are type hints
only and do not count for layers. Within a layer, no two modules may import each other, directly
or around a circle, counting every import (inside functions and type-only ones too). The checks
read the source (AST): no module is imported to run them. Test doubles (`testing`) are chosen at
the edge (tests, notebooks, the command line), so no other production module imports them.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import ensemble_instruct_lib
from ensemble_instruct_lib import LAYERS

PKG = Path(ensemble_instruct_lib.__file__).parent


def layer_of(module: str) -> int:
    """Index in LAYERS of a dotted module name relative to the package ("runs.pipeline")."""
    head = module.split(".")[0]
    if head in LAYERS:
        return LAYERS.index(head)
    raise AssertionError(f"module {module!r} is in no layer: add its top name to LAYERS")


def _is_type_checking(node: ast.If) -> bool:
    t = node.test
    return (isinstance(t, ast.Name) and t.id == "TYPE_CHECKING") or (
        isinstance(t, ast.Attribute) and t.attr == "TYPE_CHECKING"
    )


def imported_modules(
    tree: ast.AST,
    module: str,
    is_package: bool,
    *,
    type_checking: bool = False,
    modules: frozenset[str] = frozenset(),
) -> list[tuple[int, str]]:
    """(line, dotted target relative to the package) of every import of the package's modules.

    Args:
        type_checking: also the imports under ``if TYPE_CHECKING:`` (type hints only).
        modules: the package's modules; ``from pkg import name`` where ``pkg.name`` is one of them
            targets that module instead of ``pkg``.
    """
    out: list[tuple[int, str]] = []
    here = module.split(".") if module else []
    if not is_package:
        here = here[:-1]

    def add(line: int, target: str, names: list[ast.alias]) -> None:
        subs = [f"{target}.{a.name}" if target else a.name for a in names]
        if subs and all(s in modules for s in subs):
            out.extend((line, s) for s in subs)
        else:
            out.append((line, target))

    def visit(node: ast.AST) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.If) and _is_type_checking(child) and not type_checking:
                for sub in child.orelse:
                    visit(sub)
                continue
            if isinstance(child, ast.ImportFrom):
                if child.level:
                    base = here[: len(here) - (child.level - 1)] if child.level > 1 else here
                    target = ".".join([*base, *(child.module.split(".") if child.module else [])])
                    if not child.module and not base:
                        # "from . import x" at the top: x is the module
                        for alias in child.names:
                            out.append((child.lineno, alias.name))
                        continue
                    add(child.lineno, target, child.names)
                elif child.module and child.module.startswith("ensemble_instruct_lib."):
                    add(child.lineno, child.module.split(".", 1)[1], child.names)
            elif isinstance(child, ast.Import):
                for alias in child.names:
                    if alias.name.startswith("ensemble_instruct_lib."):
                        out.append((child.lineno, alias.name.split(".", 1)[1]))
            visit(child)

    visit(tree)
    return out


def _modules(root: Path) -> dict[str, Path]:
    """The package's modules by dotted name relative to it (a subpackage by its own name)."""
    found = {}
    for path in sorted(root.rglob("*.py")):
        parts = [p for p in path.relative_to(root).with_suffix("").parts if p != "__init__"]
        if parts:
            found[".".join(parts)] = path
    return found


def import_circles(root: Path = PKG) -> list[list[str]]:
    """Every import circle between the package's modules (each as its sorted members), counting
    every import: at the top, inside functions, and under ``if TYPE_CHECKING:``."""
    modules = _modules(root)
    names = frozenset(modules)
    graph = {
        m: {
            target
            for _, target in imported_modules(
                ast.parse(path.read_text(), str(path)),
                m,
                path.name == "__init__.py",
                type_checking=True,
                modules=names,
            )
            if target in names and target != m
        }
        for m, path in modules.items()
    }
    # Tarjan's strongly connected components, iteratively: a component of two or more is a circle
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    circles = []
    for start in graph:
        if start in index:
            continue
        work = [(start, iter(sorted(graph[start])))]
        index[start] = low[start] = len(index)
        stack.append(start)
        on_stack.add(start)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = len(index)
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph[child]))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                members = []
                while True:
                    m = stack.pop()
                    on_stack.discard(m)
                    members.append(m)
                    if m == node:
                        break
                if len(members) > 1:
                    circles.append(sorted(members))
    return circles


def violations(root: Path = PKG) -> list[str]:
    found = []
    for module, path in _modules(root).items():  # the package __init__ sits above every layer
        mine = layer_of(module)
        tree = ast.parse(path.read_text(), str(path))
        for line, target in imported_modules(tree, module, path.name == "__init__.py"):
            if target and layer_of(target) > mine:
                found.append(
                    f"{path.relative_to(root.parent)}:{line}: {module} ({LAYERS[mine]}) "
                    f"imports {target} ({LAYERS[layer_of(target)]})"
                )
    return found


#: The one production module allowed to import `testing`: the command line, the program's edge,
#: where a user asks for test doubles by name (``make-tiny-models`` builds the random-weight
#: checkpoints of configs/offline-tiny.yaml, ``sweep --fake-lms`` answers with fake LMs), as a test
#: or a notebook does by passing them in. Everything else takes backends, never chooses doubles.
TESTING_EDGE = frozenset({"cli"})


def imports_of_testing(root: Path = PKG) -> list[str]:
    """Imports of `testing` (type-only ones too) by modules outside it, but for `TESTING_EDGE`."""
    found = []
    for module, path in _modules(root).items():
        if module.split(".")[0] == "testing" or module in TESTING_EDGE:
            continue
        tree = ast.parse(path.read_text(), str(path))
        for line, target in imported_modules(
            tree, module, path.name == "__init__.py", type_checking=True
        ):
            if target.split(".")[0] == "testing":
                found.append(f"{path.relative_to(root.parent)}:{line}: {module} imports {target}")
    return found


def _copy_package(tmp_path: Path) -> Path:
    """A copy of the package's source under `tmp_path`, for a check to be shown an injected import."""
    import shutil

    copy = tmp_path / "ensemble_instruct_lib"
    shutil.copytree(PKG, copy, ignore=shutil.ignore_patterns("__pycache__"))
    return copy


def test_every_module_imports_only_lower_layers():
    assert violations() == []


def test_no_import_circle_between_modules():
    assert import_circles() == []


def test_the_circle_check_catches_a_type_only_circle(tmp_path):
    """Copy the package, give `method.novelty_index` a type-only import of a module that imports
    it: the check reports the two as a circle (the layer check does not: same layer, type only)."""
    copy = _copy_package(tmp_path)
    assert "from .novelty_index import" in (copy / "method" / "filters.py").read_text()
    target = copy / "method" / "novelty_index.py"
    target.write_text(
        target.read_text() + "\nif TYPE_CHECKING:\n    from .filters import NoveltyFilter\n"
    )
    assert import_circles(copy) == [["method.filters", "method.novelty_index"]]
    assert violations(copy) == []


def test_no_production_module_imports_the_test_doubles():
    assert imports_of_testing() == []


def test_the_testing_check_catches_an_import(tmp_path):
    """Copy the package, let a production module import a fake LM: the check reports it (the
    layer check does not: `runs` sits above `testing`); `testing` importing itself is fine."""
    copy = _copy_package(tmp_path)
    target = copy / "runs" / "sweep.py"
    target.write_text(target.read_text() + "\nfrom ..testing.fake import fake_backends  # noqa\n")
    found = imports_of_testing(copy)
    assert len(found) == 1 and "runs.sweep imports testing.fake" in found[0]
    assert violations(copy) == []
    inside = copy / "testing" / "servers.py"
    inside.write_text(inside.read_text() + "\nfrom .fake import fake_backends  # noqa\n")
    assert len(imports_of_testing(copy)) == 1


def test_every_subpackage_has_a_layer_and_a_docstring():
    for path in sorted(PKG.iterdir()):
        if path.is_dir() and (path / "__init__.py").exists():
            assert path.name in LAYERS, path
            doc = ast.get_docstring(ast.parse((path / "__init__.py").read_text()))
            assert doc and len(doc.split()) >= 20, f"{path.name}/__init__.py needs a docstring"


def test_the_rule_catches_a_reverse_import(tmp_path):
    """Copy the package, add one import of a higher layer to a low one: the check reports it."""
    copy = _copy_package(tmp_path)
    target = copy / "method" / "rouge.py"
    target.write_text(target.read_text() + "\nfrom ..runs import pipeline  # noqa\n")
    found = violations(copy)
    assert len(found) == 1 and "method.rouge (method) imports runs" in found[0]
    typed = copy / "method" / "filters.py"
    typed.write_text(
        typed.read_text() + "\nif TYPE_CHECKING:\n    from ..runs.config import RunConfig\n"
    )
    assert len(violations(copy)) == 1


def test_no_module_imports_another_by_string():
    """importlib by string is for registries only: the package's lazy public names, the engine
    factory, the known-model registry (a model's weight package), and a sweep's user-given
    "module:function" target."""
    allowed = {
        "__init__.py",
        "engines/__init__.py",
        "engines/factory.py",
        "engines/models.py",
        "runs/sweep.py",
    }
    for path in sorted(PKG.rglob("*.py")):
        rel = str(path.relative_to(PKG))
        if rel in allowed:
            continue
        assert "import_module(" not in path.read_text(), rel


@pytest.mark.parametrize("heavy", ["torch", "transformers", "pandas", "matplotlib", "httpx"])
def test_importing_the_package_is_light(heavy):
    import subprocess
    import sys

    code = f"import ensemble_instruct_lib, sys; print({heavy!r} in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
