"""The package's shape: one entry, three ways in; pure layers that import
neither distributed nor mpi4py; classes that pickle under their own module."""
from __future__ import annotations

import os
import pickle
import subprocess
import sys

import pytest

from launch import LAUNCHER, ROOT

PURE = ["banners", "errors", "gpus", "launchers", "layout", "node", "options", "places",
        "plan", "sites", "network", "script"]


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
    from start_daskmpi.servers import NannyWorker

    assert NannyWorker.__module__ == "start_daskmpi.servers"
    assert b"start_daskmpi.servers" in pickle.dumps(NannyWorker)
