"""The package has no import circles (module-level or inside functions): each layer imports only below it."""

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[2] / "internvl_batch"


def import_graph() -> dict[str, set[str]]:
    modules = {}
    for file in PACKAGE.rglob("*.py"):
        parts = file.relative_to(PACKAGE.parent).with_suffix("").parts
        modules[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = file
    graph: dict[str, set[str]] = {name: set() for name in modules}
    for name, file in modules.items():
        for node in ast.walk(ast.parse(file.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("internvl_batch"):
                for alias in node.names:
                    target = f"{node.module}.{alias.name}"
                    graph[name].add(target if target in modules else node.module)
            elif isinstance(node, ast.Import):
                graph[name] |= {a.name for a in node.names if a.name in modules}
    # A package's __init__ re-exporting its own submodules is not a circle.
    return {n: {t for t in targets if t in modules and t.rsplit(".", 1)[0] != n} for n, targets in graph.items()}


def test_no_import_circles():
    graph = import_graph()
    circles, done = [], set()

    def visit(name, path):
        if name in path:
            circles.append(" -> ".join(path[path.index(name) :] + [name]))
            return
        if name in done:
            return
        done.add(name)
        for target in sorted(graph[name]):
            visit(target, [*path, name])

    for name in sorted(graph):
        visit(name, [])
    assert circles == []
