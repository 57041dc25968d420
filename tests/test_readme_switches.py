"""The README's recipe table names every registered ablation switch and its setting (it stays true)."""

from __future__ import annotations

from pathlib import Path

from lightning_yolo.study.switches import SWITCHES

README = Path(__file__).resolve().parents[1] / "README.md"


def test_readme_recipe_table_lists_every_switch():
    text = README.read_text()
    table = text[text.index("## The YOLOv4 recipe, switch by switch") : text.index("## Training details")]
    rows = [line for line in table.splitlines() if line.startswith("| ") and "---" not in line]
    for name, switch in SWITCHES.items():
        row = next((r for r in rows if f"| `{name}` |" in r), None)
        assert row is not None, f"README recipe table has no row for the switch {name!r}"
        for path in switch.paths:
            leaf = path.split(".")[-1]
            assert leaf in row or leaf.rsplit("_", 1)[0] in row, f"{name}: {path} not named in {row}"
