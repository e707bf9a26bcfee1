"""The package's shape: each shared constant defined once, every module on the map.

These read the source (``ast``), not the running code: they hold the rule "one
module owns each fact" that a reviewer would otherwise have to check by eye.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

from mnist_lib import constants, paths

PACKAGE = paths.PACKAGE_DIR
ARCHITECTURE = paths.COURSE_ROOT / "docs" / "architecture.md"
SHARED = {name: value for name, value in vars(constants).items() if name.isupper()}
# Literals distinctive enough that seeing one in code means a constant was copied.
DISTINCTIVE = {value for value in SHARED.values()
               if (isinstance(value, str) and len(value) >= 8) or value in (2222, 8500, 8501, 6006)}


def modules() -> list[Path]:
    return sorted(p for p in PACKAGE.rglob("*.py") if "__pycache__" not in p.parts)


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def code_literals(tree: ast.AST):
    """Every constant in the code, docstrings left out (they may quote a value)."""
    docstrings = {id(node.body[0].value) for node in ast.walk(tree)
                  if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef))
                  and node.body and isinstance(node.body[0], ast.Expr)
                  and isinstance(node.body[0].value, ast.Constant)}
    for node in ast.walk(tree):
        if isinstance(node, ast.Constant) and id(node) not in docstrings and not isinstance(node.value, bool):
            yield node


@pytest.mark.parametrize("path", modules(), ids=module_name)
def test_shared_constants_are_defined_once(path):
    if path.name == "constants.py":
        return
    tree = ast.parse(path.read_text())
    redefined = [target.id for node in ast.walk(tree) if isinstance(node, (ast.Assign, ast.AnnAssign))
                 for target in (node.targets if isinstance(node, ast.Assign) else [node.target])
                 if isinstance(target, ast.Name) and target.id in SHARED]
    assert not redefined, f"{path.name} defines {redefined} again: import them from mnist_lib.constants"
    copied = sorted({f"{node.value!r} (line {node.lineno})" for node in code_literals(tree)
                     if node.value in DISTINCTIVE and type(node.value) in (str, int)})
    assert not copied, f"{path.name} spells out shared values {copied}: use the names in mnist_lib.constants"


def test_constants_import_nothing():
    tree = ast.parse((PACKAGE / "constants.py").read_text())
    assert not [n for n in ast.walk(tree) if isinstance(n, (ast.Import, ast.ImportFrom))]


def test_every_module_is_on_the_architecture_map():
    listed = set(re.findall(r"^\|\s*`([\w.]+)`", ARCHITECTURE.read_text(), flags=re.MULTILINE))
    missing = [name for name in map(module_name, modules()) if name and name not in listed]
    assert not missing, f"docs/architecture.md's module table does not list {missing}"
    gone = sorted(listed - set(map(module_name, modules())))
    assert not gone, f"docs/architecture.md lists modules that no longer exist: {gone}"
