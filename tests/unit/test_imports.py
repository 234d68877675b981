"""The package's import graph: no circles, each layer imports only its own and the layers below it, and our own
modules are imported at the top of modules (so the graph is what the file heads say), except where a late
import is the point (listed with its reason in LATE_IMPORTS)."""

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[2] / "internvl_batch"

# Bottom to top. A module may import modules of its own layer and of the layers below, never above. Names are
# the package's top-level modules and subpackages; MODULE_LAYERS places single modules elsewhere.
LAYERS = [
    # Plain data and rules, no configuration: error types, redaction, task presets, the output's columns.
    (
        "base",
        {
            "errors",
            "redact",
            "structured",
            "grounding",
            "keys",
            "prompts",
            "tasks",
            "output_schema",
            "summary",
            "done_keys",
        },
    ),
    ("config", {"config"}),  # the typed configuration; it imports no image, manifest or model code
    # Reading and writing bytes: filesystems, media fetches, image/video/PDF decoding, the output directory.
    (
        "io",
        {
            "filesystems",
            "http_media",
            "local_media",
            "storage",
            "output_layout",
            "output_foreign",
            "output_dir",
            "imaging",
        },
    ),
    # The domain: manifests, models, generation, results; config loading (it checks the manifest formats).
    (
        "domain",
        {
            "manifest",
            "model",
            "generation",
            "results",
            "compact",
            "passthrough",
            "config_loader",
            "fingerprint",
            "orphans",
            "compact_plan",
            "documents",
            "export",
        },
    ),
    ("stages", {"stages"}),  # one callable class per stage; no Ray
    ("wiring", {"pipeline", "report", "inspect_media"}),  # Ray wiring, the report, inspection
    ("entry", {"job", "api", "demo"}),  # what users call
    ("cli", {"cli", "cli_compact", "cli_export", ""}),  # the command line; the package root
]
# `manifest/local.py` runs the job's read side (layout, scan, read stage) in one process for tests and tools:
# it uses the read stage, so it sits with the wiring although it lives with the manifests.
MODULE_LAYERS = {"internvl_batch.manifest.local": "wiring"}

# Modules that import some of our own modules inside functions, and why. Everywhere else imports sit at the top.
LATE_IMPORTS = {
    "internvl_batch": "the package root stays light: importing any submodule runs it first",
    "internvl_batch.cli": "each command imports what it runs, so --help, inspect and plan start without Ray or torch",
    "internvl_batch.model.locate": "the tiny checkpoint's writer (torch) only for model.path: tiny; the "
    "preprocessing actors resolve the model too and never load torch",
    "internvl_batch.cli_export": "as cli.py: the export command imports what it runs",
    "internvl_batch.model.plan": "the checkpoint conversion (torch) only when a checkpoint's shapes are planned",
}


def _modules() -> dict[str, Path]:
    modules = {}
    for file in PACKAGE.rglob("*.py"):
        parts = file.relative_to(PACKAGE.parent).with_suffix("").parts
        modules[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = file
    return modules


def _imports(file: Path):
    """(imported module or name, whether the import is inside a function) for every import of our package."""
    tree = ast.parse(file.read_text())
    late = {
        id(node)
        for fn in ast.walk(tree)
        if isinstance(fn, ast.FunctionDef | ast.AsyncFunctionDef)
        for node in ast.walk(fn)
    }
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("internvl_batch"):
            for alias in node.names:
                yield f"{node.module}.{alias.name}", node.module, id(node) in late
        elif isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.startswith("internvl_batch"):
                    yield alias.name, alias.name, id(node) in late


def import_graph() -> dict[str, set[str]]:
    modules = _modules()
    graph: dict[str, set[str]] = {name: set() for name in modules}
    for name, file in modules.items():
        for target, module, _ in _imports(file):
            graph[name].add(target if target in modules else module)
    # A package's __init__ re-exporting its own submodules is not a circle.
    return {n: {t for t in targets if t in modules and t.rsplit(".", 1)[0] != n} for n, targets in graph.items()}


def layer_of(module: str) -> int:
    names = [layer for layer, _ in LAYERS]
    if module in MODULE_LAYERS:
        return names.index(MODULE_LAYERS[module])
    top = module.split(".")[1] if "." in module else ""
    matches = [i for i, (_, members) in enumerate(LAYERS) if top in members]
    assert matches, f"{module} is in no layer: add its top-level name to LAYERS"
    return matches[0]


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


def test_each_layer_imports_only_its_own_and_those_below():
    upward = [
        f"{name} ({LAYERS[layer_of(name)][0]}) imports {target} ({LAYERS[layer_of(target)][0]})"
        for name, targets in sorted(import_graph().items())
        for target in sorted(targets)
        if layer_of(target) > layer_of(name)
    ]
    assert upward == []


def test_our_modules_are_imported_at_the_top_except_where_documented():
    late = sorted(
        f"{name} imports {module} inside a function"
        for name, file in _modules().items()
        if name not in LATE_IMPORTS
        for _, module, inside in _imports(file)
        if inside
    )
    assert late == []
    stale = [name for name in LATE_IMPORTS if not any(inside for *_, inside in _imports(_modules()[name]))]
    assert stale == [], "listed in LATE_IMPORTS without a late import"
