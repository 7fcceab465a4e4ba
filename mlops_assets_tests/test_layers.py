"""The package's layers, read from its source: the served model's app (model_server/) imports
nothing else of the project, ml/ nothing but it, and no module imports one that imports it back (deferred imports inside functions count too: a cycle
hidden in a function is still a cycle)."""

from __future__ import annotations

import ast
import json
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "mlops_assets"


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def import_graph() -> dict[str, set[str]]:
    modules = {module_name(p): p for p in PACKAGE.rglob("*.py")}
    graph: dict[str, set[str]] = {name: set() for name in modules}
    for name, path in modules.items():
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.level:  # relative: from . import x
                base = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
                module = f"{base}.{node.module}" if node.module else base
                targets = [module, *(f"{module}.{a.name}" for a in node.names)]
            elif isinstance(node, ast.ImportFrom) and node.module:
                targets = [node.module, *(f"{node.module}.{a.name}" for a in node.names)]
            elif isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            else:
                continue
            graph[name].update(t for t in targets if t in modules and t != name)
    return graph


def cycles(graph: dict[str, set[str]]) -> list[set[str]]:
    """The strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[set[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        for other in sorted(graph[node]):
            if other not in index:
                visit(other)
                low[node] = min(low[node], low[other])
            elif other in stack:
                low[node] = min(low[node], index[other])
        if low[node] == index[node]:
            component = set()
            while True:
                member = stack.pop()
                component.add(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(component)

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def test_no_module_imports_one_that_imports_it_back():
    assert [sorted(c) for c in cycles(import_graph())] == [], "import cycles"


def test_the_ml_layer_imports_nothing_else_of_the_project_but_the_served_app():
    outside = {
        (name, target)
        for name, targets in import_graph().items()
        if name.startswith("mlops_assets.ml.")
        for target in targets
        if target != "mlops_assets.ml"
        and not target.startswith(("mlops_assets.ml.", "mlops_assets.model_server"))
    }
    assert outside == set()


def test_the_served_app_imports_nothing_else_of_the_project():
    """It is copied into the image alone (its ruff.toml bans the rest; the server's own test
    imports a copy of it with nothing else)."""
    graph = import_graph()
    inside = {name for name in graph if name.startswith("mlops_assets.model_server")}
    assert "mlops_assets.model_server.app" in inside
    assert "mlops_assets.model_server.batching" in graph["mlops_assets.model_server.app"]
    outside = {(name, target) for name in inside for target in graph[name] if target not in inside}
    assert outside == set()


def test_the_served_apps_lint_rule_bans_every_other_module_of_the_project():
    import tomllib

    rules = tomllib.loads((PACKAGE / "model_server" / "ruff.toml").read_text())
    banned = set(rules["lint"]["flake8-tidy-imports"]["banned-api"])
    others = {
        f"mlops_assets.{path.stem if path.suffix == '.py' else path.name}"
        for path in PACKAGE.iterdir()
        if path.name not in ("model_server", "__init__.py", "__pycache__")
        and (path.suffix == ".py" or (path / "__init__.py").exists())
    }
    assert others - banned == set()


def test_data_flows_one_way_from_the_components_to_resources_and_ml():
    """defs -> components -> (ml, resources): a resource is an outside system, configured once
    for the deployment, and knows no model's component."""
    backwards = {
        (name, target)
        for name, targets in import_graph().items()
        if name.startswith(("mlops_assets.resources.", "mlops_assets.lib."))
        for target in targets
        if target.startswith(("mlops_assets.components", "mlops_assets.defs"))
    }
    assert backwards == set()


PROBE = """
import collections.abc, importlib, json, os, pkgutil, sys
watched = sys.argv[1:]  # the folders whose code's reads count (not the libraries' own)
read = {}
def reader():
    frame = sys._getframe(2)
    skip = ("<string>", "os.py", "<frozen os>", "_collections_abc>", "_collections_abc.py")
    while frame and frame.f_code.co_filename.endswith(skip):
        frame = frame.f_back
    return frame.f_code.co_filename if frame else ""
class Recording(collections.abc.MutableMapping):
    def __init__(self, inner): self.inner = inner
    def __getitem__(self, key):
        where = reader()
        if any(where.startswith(folder) for folder in watched):
            read.setdefault(key, []).append(where)
        return self.inner[key]
    def __setitem__(self, key, value): self.inner[key] = value
    def __delitem__(self, key): del self.inner[key]
    def __iter__(self): return iter(self.inner)
    def __len__(self): return len(self.inner)
    def copy(self): return dict(self.inner)
os.environ = Recording(os.environ)
import mlops_assets
for module in pkgutil.walk_packages(mlops_assets.__path__, "mlops_assets."):
    if ".stack" not in module.name:  # the local stack's CLI, outside the code location
        importlib.import_module(module.name)
import canary_probe  # reads a setting on import, as no module of the package may
print(json.dumps(read))
"""


def test_nothing_reads_a_setting_on_import(tmp_path: Path) -> None:
    """Importing every module of the package, the definitions module among them, reads no
    project setting from the environment: settings are read when the definitions are built
    (deployment) or the component is loaded (model), so a test or a process that changes them
    gets what it set. A canary module that does read one on import proves the probe sees it,
    through os.environ and os.getenv alike."""
    import os
    import subprocess
    import sys

    from mlops_assets.variables import all_settings

    (tmp_path / "canary_probe.py").write_text(
        "import os\nHOME = os.getenv('MLOPS_HOME')\nSOURCE = os.environ.get('MLOPS_SOURCE_URI')\n"
    )
    env = {**os.environ, "PYTHONPATH": str(tmp_path)}
    done = subprocess.run(
        [sys.executable, "-c", PROBE, str(PACKAGE), str(tmp_path)],
        capture_output=True,
        text=True,
        check=False,
        timeout=300,
        env=env,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    read = json.loads(done.stdout.splitlines()[-1])
    names = {s.name for s in all_settings()}
    by_canary = {k for k, places in read.items() for w in places if w.startswith(str(tmp_path))}
    assert by_canary == {"MLOPS_HOME", "MLOPS_SOURCE_URI"}  # the probe sees what it looks for
    by_package = {
        k: [w for w in places if w.startswith(str(PACKAGE))]
        for k, places in read.items()
        if k in names and any(w.startswith(str(PACKAGE)) for w in places)
    }
    assert by_package == {}


def test_the_cycle_finder_finds_a_cycle():
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert cycles(graph) == [{"a", "b", "c"}]
