"""The package's shape: one entry, three ways in; pure layers that import
neither distributed nor mpi4py; classes that pickle under their own module."""
from __future__ import annotations

import os
import pickle
import subprocess
import sys

import pytest

from launch import LAUNCHER, ROOT

# The plan (plan/): every module of it, and the errors it raises.
PLAN = sorted(p.stem for p in (ROOT / "start_daskmpi" / "plan").glob("*.py")
              if p.stem != "__init__")
PURE = [*(f"plan.{name}" for name in PLAN), "errors", "driver.script"]


# The GPUs a plan sees, the same on a laptop and on a GPU node.
FOUR_GPUS = {**os.environ, "CUDA_VISIBLE_DEVICES": "0,1,2,3"}


def python(code: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120,
        env=FOUR_GPUS,
    )


@pytest.mark.parametrize("module", PURE)
def test_pure_modules_import_neither_distributed_nor_mpi4py(module):
    done = python(
        f"import sys, start_daskmpi.{module}; "
        "print(sorted(m for m in sys.modules if m.split('.')[0] in ('distributed', 'mpi4py')))"
    )
    assert done.returncode == 0 and done.stdout.strip() == "[]", done


def test_plan_imports_neither_distributed_nor_mpi4py():
    done = python(
        "import sys; from start_daskmpi.cli import main; "
        "main(['--plan', '--nodes', '2', '--gpus-per-node', '4']); "
        "print(sorted(m for m in sys.modules if m.split('.')[0] in ('distributed', 'mpi4py')))"
    )
    assert done.returncode == 0 and done.stdout.splitlines()[-1] == "[]", done
    assert "Launch lines that give every GPU a worker (6 ranks a node):" in done.stdout


@pytest.mark.parametrize("command", [
    [sys.executable, str(LAUNCHER)],
    [sys.executable, "-m", "start_daskmpi"],
])
def test_the_entry_script_and_the_module_run_the_same_main(command, tmp_path):
    """From any folder: the entry script finds the package beside it."""
    done = subprocess.run(
        [*command, "--plan", "--gpus-per-node", "2"], capture_output=True, text=True,
        cwd=tmp_path if command[1] != "-m" else ROOT, timeout=120, env=FOUR_GPUS,
    )
    assert done.returncode == 0, done
    assert done.stdout.startswith("4 ranks on 1 node(s) of 2 GPU(s), placed in blocks:")


def test_the_entry_script_is_thin():
    code = [line for line in LAUNCHER.read_text().splitlines()
            if line.strip() and not line.lstrip().startswith("#")]
    assert len(code) <= 20 and "from start_daskmpi.cli import main" in LAUNCHER.read_text()


def test_a_mistake_is_one_line_and_status_2():
    done = subprocess.run(
        [sys.executable, str(LAUNCHER), "--gpus-per-node", "x"], capture_output=True,
        text=True, timeout=120,
    )
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert done.stderr.splitlines() == [
        "start_daskmpi: error: argument --gpus-per-node: expected 0 or more, got 'x' "
        "(see --help)"
    ]


def test_the_nanny_worker_pickles_as_its_module_not_main():
    from start_daskmpi.servers.workers import NannyWorker

    assert NannyWorker.__module__ == "start_daskmpi.servers.workers"
    assert b"start_daskmpi.servers.workers" in pickle.dumps(NannyWorker)


# --- the layers: each subpackage imports only those below it -------------------

LAYERS = ["errors", "plan", "mpi", "security", "servers", "driver", "lifecycle", "modes", "cli"]
PACKAGE = ROOT / "start_daskmpi"


def module_name(path) -> str:
    name = ".".join(path.relative_to(ROOT).with_suffix("").parts)
    return name.removesuffix(".__init__")


def imports_of(path) -> set[str]:
    """The package's modules that ``path`` imports, at its top or in a function."""
    import ast

    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.level:
            raise AssertionError(f"{path}: a relative import")
        names = ([node.module, *(f"{node.module}.{a.name}" for a in node.names)]
                 if isinstance(node, ast.ImportFrom) and node.module
                 else [a.name for a in node.names] if isinstance(node, ast.Import) else [])
        found.update(n for n in names if n.startswith("start_daskmpi."))
    return found


def layer(module: str) -> str:
    """Its subpackage (or top module): ``plan`` for start_daskmpi.plan.layout."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else ""


MODULES = {module_name(p): p for p in PACKAGE.rglob("*.py")}


# The package's __init__ and __main__ are entries, above every layer.
@pytest.mark.parametrize("module", sorted(m for m in MODULES if layer(m) in LAYERS))
def test_a_module_imports_only_its_own_layer_and_those_below(module):
    below = LAYERS[:LAYERS.index(layer(module)) + 1]
    upward = sorted(m for m in imports_of(MODULES[module])
                    if m in MODULES and layer(m) not in below)
    assert upward == [], f"{module} imports from a layer above its own"


def test_no_module_imports_itself_back_through_others():
    graph = {m: {i for i in imports_of(p) if i in MODULES and i != m} for m, p in MODULES.items()}

    def circle_from(start):
        path, seen = [start], set()

        def walk(node):
            for nxt in sorted(graph[node]):
                if nxt == start:
                    return [*path, start]
                if nxt not in seen:
                    seen.add(nxt)
                    path.append(nxt)
                    if found := walk(nxt):
                        return found
                    path.pop()
            return None

        return walk(start)

    circles = [circle for m in sorted(graph) if (circle := circle_from(m))]
    assert circles == []


@pytest.mark.parametrize("module", sorted(MODULES))
def test_no_module_is_over_400_lines(module):
    assert len(MODULES[module].read_text().splitlines()) <= 400


def test_mpi4py_is_imported_in_mpi_alone():
    importers = sorted(m for m, p in MODULES.items() if layer(m) != "mpi"
                       and "mpi4py" in {n.split(".")[0] for n in python_imports(p)})
    assert importers == []


def python_imports(path) -> set[str]:
    import ast

    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
    return names
