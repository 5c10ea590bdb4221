"""What importing costs and what names mean: a client starts without numba, the kernels' public
functions are the package's names, and imports run one way between the engine's rooms."""

import ast
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def _run(code: str) -> str:
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    return out.stdout.strip()


def test_a_client_starts_without_numba():
    code = ("import sys, posescore.clients, posescore.kernels.skeleton\n"
            "from posescore.kernels import METRICS, SCORE_SCALES\n"
            "print('numba' in sys.modules)")
    assert _run(code) == "False"


def test_kernel_functions_are_the_packages_names():
    code = ("from posescore import kernels\nfrom posescore.kernels import dtw, normalize\n"
            "from posescore.engine.analysis import people\nfrom posescore.engine.reports import render\n"
            "print(callable(kernels.normalize), callable(kernels.dtw), dtw.__module__)")
    assert _run(code) == "True True posescore.kernels._dtw"


def test_engine_does_not_import_the_load_tests():
    code = ("import sys, posescore.engine.cli.commands, posescore.engine.jobs.compare\n"
            "import posescore.engine.analysis.answers\n"
            "print(sorted(m for m in sys.modules if m.startswith('posescore.loadtests')))")
    assert _run(code) == "[]"


# -- the rooms: imports run one way -------------------------------------------------------------

#: Each room of engine/ and the rooms it may import (besides itself, the base types in
#: engine/poses.py, posescore.kernels and posescore.clients); docs/ARCHITECTURE.md shows the same.
ROOMS_MAY_IMPORT = {
    "cli": {"jobs", "serving", "archive", "analysis", "media", "reports"},
    "jobs": {"serving", "archive", "analysis", "media", "reports"},
    "serving": {"analysis", "media", "archive.shard"},
    "archive": {"analysis", "media"},
    "analysis": set(),
    "media": set(),
    "reports": set(),
}


def _package_modules() -> dict[str, Path]:
    """Every module of the distribution: dotted name -> file."""
    folders = {"posescore": ROOT / "posescore", "posescore.kernels": ROOT / "kernels",
               "posescore.clients": ROOT / "clients", "posescore.engine": ROOT / "engine",
               "posescore.loadtests": ROOT / "loadtests"}
    modules = {}
    for package, folder in folders.items():
        for path in folder.rglob("*.py"):
            parts = path.relative_to(folder).with_suffix("").parts
            if parts[-1] == "__init__":
                parts = parts[:-1]
            name = ".".join((package, *parts))
            if package == "posescore" and parts and parts[0] in ("kernels", "clients", "engine", "loadtests"):
                continue
            modules[name] = path
    return modules


def _imports(path: Path, modules: dict) -> list[tuple[str, str, int]]:
    """(imported module, imported name or '', line) of every posescore import in ``path``,
    at any depth (function-level imports count: they run too)."""
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found += [(a.name, "", node.lineno) for a in node.names if a.name.startswith("posescore")]
        elif isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("posescore"):
            for alias in node.names:
                child = f"{node.module}.{alias.name}"
                found.append((child, "", node.lineno) if child in modules else (node.module, alias.name, node.lineno))
    return found


def _room(module: str) -> str | None:
    parts = module.split(".")
    if parts[:2] != ["posescore", "engine"] or len(parts) < 3 or parts[2] == "poses":
        return None
    return parts[2]


def test_engine_rooms_import_one_way():
    modules = _package_modules()
    wrong = []
    for name, path in modules.items():
        room = _room(name)
        if room is None:
            continue
        for target, _, line in _imports(path, modules):
            other = _room(target)
            if other is None or other == room:
                continue
            allowed = ROOMS_MAY_IMPORT[room]
            sub = ".".join(target.split(".")[2:4])
            if other not in allowed and sub not in allowed:
                wrong.append(f"{path.relative_to(ROOT)}:{line}: {room} imports {target}")
    assert not wrong, "\n".join(sorted(set(wrong)))


def test_lower_packages_never_import_the_engine_or_the_load_tests():
    modules = _package_modules()
    wrong = []
    for name, path in modules.items():
        for target, _, line in _imports(path, modules):
            if name.startswith(("posescore.kernels", "posescore.clients")) and \
                    (target.startswith(("posescore.engine", "posescore.loadtests")) or target == "posescore.cli"):
                wrong.append(f"{path.relative_to(ROOT)}:{line}: imports {target}")
            if name.startswith("posescore.kernels") and target.startswith("posescore.clients"):
                wrong.append(f"{path.relative_to(ROOT)}:{line}: imports {target}")
            if name.startswith("posescore.engine") and target.startswith("posescore.loadtests"):
                wrong.append(f"{path.relative_to(ROOT)}:{line}: imports {target}")
    assert not wrong, "\n".join(sorted(set(wrong)))


def test_no_import_cycles_between_modules():
    modules = _package_modules()
    graph = {name: set() for name in modules}
    for name, path in modules.items():
        for target, _, _ in _imports(path, modules):
            while target and target not in modules:
                target = target.rpartition(".")[0]
            # a package's __init__ is not a dependency of its own modules' imports of each other
            if target and target != name and not name.startswith(target + "."):
                graph[name].add(target)
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node):
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                raise AssertionError("import cycle: " + " -> ".join(stack[stack.index(nxt):] + [nxt]))
            if nxt not in state:
                visit(nxt)
        stack.pop()
        state[node] = 2

    for node in sorted(graph):
        if node not in state:
            visit(node)


def test_no_private_name_is_imported_across_modules():
    """``from a import _b`` only where ``_b`` is a private module of the importer's own package
    (``posescore.kernels``' implementations); tests and benchmarks are outside the rule."""
    modules = _package_modules()
    wrong = []
    for name, path in modules.items():
        for target, imported, line in _imports(path, modules):
            leaf = imported or target.rpartition(".")[2]
            if not leaf.startswith("_") or leaf == "__future__":
                continue
            own_package = name.rpartition(".")[0] if path.name != "__init__.py" else name
            if not imported and target.rpartition(".")[0] == own_package:
                continue
            wrong.append(f"{path.relative_to(ROOT)}:{line}: imports {target}{'.' + imported if imported else ''}")
    for path in (ROOT / "model_repository").glob("*/1/model.py"):
        for target, imported, line in _imports(path, modules):
            if (imported or target.rpartition(".")[2]).startswith("_"):
                wrong.append(f"{path.relative_to(ROOT)}:{line}: imports {target} {imported}")
    assert not wrong, "\n".join(sorted(set(wrong)))


def test_every_module_opens_with_a_docstring():
    missing = [str(path.relative_to(ROOT)) for path in _package_modules().values()
               if ast.get_docstring(ast.parse(path.read_text())) is None]
    assert not missing, missing
