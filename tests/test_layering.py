"""The tree's architecture, checked: `prepro/` (what a training job imports) never
imports `pipelines/` (the Beam job), except `prepro.adapt`'s one lazy import."""

import ast
import pathlib
import subprocess
import sys

ROOT = pathlib.Path(__file__).resolve().parents[1]
ALLOWED = {("prepro/__init__.py", "adapt")}  # the documented lazy import of the job


def _imports_of_pipelines(path: pathlib.Path):
    """(file, enclosing function or None) of every import of `pipelines` in `path`."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    found = []

    def visit(node, function):
        for child in ast.iter_child_nodes(node):
            inner = child.name if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef)) else function
            names = []
            if isinstance(child, ast.Import):
                names = [alias.name for alias in child.names]
            elif isinstance(child, ast.ImportFrom) and child.level == 0:
                names = [child.module or ""]
            if any(n == "pipelines" or n.startswith("pipelines.") for n in names):
                found.append((str(path.relative_to(ROOT)), function))
            visit(child, inner)

    visit(tree, None)
    return found


def test_prepro_never_imports_pipelines_but_for_adapt():
    found = [hit for path in sorted((ROOT / "prepro").rglob("*.py")) for hit in _imports_of_pipelines(path)]
    assert set(found) == ALLOWED, found


def test_importing_prepro_loads_neither_beam_nor_the_pipelines():
    code = ("import sys, prepro, prepro.layers, prepro.training, prepro.golden; "
            "print(sorted(m for m in sys.modules if m.split('.')[0] in ('pipelines', 'apache_beam')))")
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip() == "[]", done.stdout
