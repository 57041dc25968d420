"""pyproject.toml lists every package of the source tree (a wheel or non-editable install would miss the others)."""

from __future__ import annotations

import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_every_package_is_listed_in_pyproject():
    listed = set(tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"])
    found = {
        ".".join(init.parent.relative_to(ROOT).parts)
        for init in (ROOT / "lightning_yolo").rglob("__init__.py")
        if "__pycache__" not in init.parts
    }
    found.add("lightning_yolo.configs")  # configs/ installed as a data package (package-dir)
    assert found == listed, f"missing from pyproject: {sorted(found - listed)}; listed but absent: {sorted(listed - found)}"
