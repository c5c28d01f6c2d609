"""The prompting methods are listed once, in the registry (`methods.REGISTRY`): run configs, the
options check, notebook 04's grid, the method sweep and the method plot read it."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import ensemble_instruct_lib
from ensemble_instruct_lib.errors import ConfigError
from ensemble_instruct_lib.methods import METHODS, REGISTRY, options_class

PKG = Path(ensemble_instruct_lib.__file__).parent

#: the one module with a deliberate list of methods: the replication study's two-method subset
SUBSETS = {"analysis/replicate.py"}


def method_lists(root: Path = PKG) -> list[str]:
    """Literal lists, tuples and sets of two or more method names outside the registry."""
    found = []
    for path in sorted(root.rglob("*.py")):
        rel = str(path.relative_to(root))
        if rel in SUBSETS:
            continue
        for node in ast.walk(ast.parse(path.read_text(), rel)):
            if isinstance(node, (ast.List, ast.Tuple, ast.Set)):
                names = [e.value for e in node.elts if isinstance(e, ast.Constant)]
                if len(set(names) & set(METHODS)) >= 2:
                    found.append(f"{rel}:{node.lineno}")
    return found


def test_the_methods_are_listed_only_in_the_registry():
    assert tuple(REGISTRY) == METHODS
    assert method_lists() == []


def test_the_check_catches_a_second_list(tmp_path):
    import shutil

    copy = tmp_path / "ensemble_instruct_lib"
    shutil.copytree(PKG, copy, ignore=shutil.ignore_patterns("__pycache__"))
    target = copy / "nb" / "grid_plots.py"
    target.write_text(target.read_text() + '\nORDER = ("ensemble_instruct", "alpaca")\n')
    assert len(method_lists(copy)) == 1


def test_readers_of_the_method_list_follow_the_registry():
    from ensemble_instruct_lib.nb.steps.ablations import AblationsConfig
    from ensemble_instruct_lib.runs.config import load_config

    assert AblationsConfig(out_dir="o").methods == list(METHODS)
    with pytest.raises(ConfigError, match=str(list(METHODS)[1])):
        load_config({"generator": {"kind": "scripted", "model": "g"}, "method": "nope"})
    assert options_class("ensemble_instruct") is None
    assert all(options_class(m) is not None for m in METHODS if m != "ensemble_instruct")
    with pytest.raises(ConfigError, match="unknown method"):
        options_class("nope")
