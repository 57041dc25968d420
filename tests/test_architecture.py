"""Facts that docs/architecture.md states about the package's shape, checked against the code (issue 18)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "lightning_yolo"

#: Folders and modules below module.py: they never import Lightning, except the ones in LIGHTNING_ALLOWED. (errors.py
#: is the command line's error reporting, imported by commands/ only: it sits with them, above module.py.)
BELOW_MODULE = ("ops", "models", "training", "data", "reporting", "inference", "settings.py", "compat.py")

#: The DataModule. (compat.py names LightningCLI's private methods as plain strings: it imports no Lightning.)
LIGHTNING_ALLOWED = ("data/datamodule.py",)

LIGHTNING_PACKAGES = ("pytorch_lightning", "lightning", "lightning_fabric", "lightning_utilities")


def _imported_modules(path: Path) -> list[str]:
    """Every module that ``path`` imports, at the top or inside a function (absolute names only)."""
    names = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names += [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.append(node.module)
    return names


def _below_module_files() -> list[Path]:
    files = []
    for entry in BELOW_MODULE:
        path = PACKAGE / entry
        files += [path] if path.suffix == ".py" else sorted(path.rglob("*.py"))
    return [f for f in files if f.is_file()]


@pytest.mark.parametrize("path", _below_module_files(), ids=lambda p: str(p.relative_to(PACKAGE)))
def test_nothing_below_module_py_imports_lightning(path):
    relative = str(path.relative_to(PACKAGE))
    lightning = [m for m in _imported_modules(path) if m.split(".")[0] in LIGHTNING_PACKAGES]
    if relative in LIGHTNING_ALLOWED:
        return
    assert not lightning, f"{relative} imports {lightning}: only the DataModule, callbacks/ and above may"


def test_yolomodule_class_is_small():
    tree = ast.parse((PACKAGE / "module.py").read_text(encoding="utf-8"))
    cls = next(n for n in tree.body if isinstance(n, ast.ClassDef) and n.name == "YOLOModule")
    lines = cls.end_lineno - cls.lineno + 1
    assert lines <= 365, f"YOLOModule has {lines} lines (target ~350): move what is not training or evaluation out"
    longest = max((f.end_lineno - f.lineno + 1, f.name) for f in cls.body if isinstance(f, ast.FunctionDef))
    assert longest[0] <= 80, f"YOLOModule.{longest[1]} has {longest[0]} lines"


def test_errors_py_is_imported_by_the_command_line_only():
    """errors.py imports Lightning's CLI parser: it must stay a module of the command layer (commands/ and study/)."""
    users = []
    for path in sorted(PACKAGE.rglob("*.py")):
        relative = path.relative_to(PACKAGE)
        if relative.parts[0] in ("commands", "study") or path.name == "errors.py":
            continue
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and (node.module or "").split(".")[-1] == "errors" and node.level:
                users.append(str(relative))
            elif isinstance(node, ast.ImportFrom) and node.level and node.module is None:
                users += [str(relative) for a in node.names if a.name == "errors"]
    assert not users, users
