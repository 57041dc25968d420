"""data/ is split by job without import cycles: the graph of the package-internal imports of lightning_yolo/data
(module level and inside functions) has no cycle, and each job's module imports only the layers below it."""

from __future__ import annotations

import ast
from pathlib import Path

DATA = Path(__file__).resolve().parents[1] / "lightning_yolo" / "data"


def _module_name(path: Path) -> str:
    parts = path.relative_to(DATA.parent.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports() -> dict[str, set[str]]:
    """Module -> the lightning_yolo.data modules it imports (the package ``__init__`` files excluded as targets: they
    re-export, and no module below imports them)."""
    modules = {_module_name(p): p for p in DATA.rglob("*.py")}
    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
        deps: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ImportFrom):
                if node.level:
                    base = package.split(".")[: len(package.split(".")) - node.level + 1]
                    target = ".".join(base + ([node.module] if node.module else []))
                else:
                    target = node.module or ""
                candidates = [target] + [f"{target}.{a.name}" for a in node.names]
                deps |= {c for c in candidates if c in modules and c != name}
            elif isinstance(node, ast.Import):
                deps |= {a.name for a in node.names if a.name in modules}
        graph[name] = deps
    return graph


def test_no_import_cycle_in_data():
    graph = _imports()
    packages = {n for n in graph if (DATA.parent.parent / n.replace(".", "/") / "__init__.py").is_file()}
    for pkg in packages:  # a module importing its own package's __init__ would be a cycle through the re-exports
        assert not any(pkg in deps and mod.startswith(pkg + ".") for mod, deps in graph.items()), pkg
    edges = {m: d - packages for m, d in graph.items()}
    state: dict[str, int] = {}

    def visit(node: str, path: list[str]) -> None:
        state[node] = 1
        for dep in edges.get(node, ()):
            assert state.get(dep) != 1, "import cycle: " + " -> ".join([*path, node, dep])
            if dep not in state:
                visit(dep, [*path, node])
        state[node] = 2

    for mod in edges:
        if mod not in state:
            visit(mod, [])


def test_each_job_imports_only_the_layers_below():
    graph = _imports()
    d = "lightning_yolo.data."
    assert not graph[d + "tiles"] & {d + "steps", d + "mixing", d + "pipelines"}
    assert not graph[d + "steps"] & {d + "mixing", d + "pipelines"}
    assert d + "pipelines" not in graph[d + "mixing"]
    assert not graph[d + "config"]  # the settings import nothing of the package
