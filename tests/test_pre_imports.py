"""What each process pre-imports, and the option that says so (no MPI)."""
from __future__ import annotations

import os

import pytest

from start_daskmpi.errors import LaunchError
from start_daskmpi.plan.options import parse_args
from start_daskmpi.plan.values import parse_modules
from start_daskmpi.servers.pre_imports import check_modules, modules_for


@pytest.mark.parametrize("text, names", [
    ("cudf,dask_cudf", ["cudf", "dask_cudf"]),
    (" numpy , dask.dataframe ,", ["numpy", "dask.dataframe"]),
    ("", []),
])
def test_module_names_separated_by_commas(text, names):
    assert parse_modules(text) == names
    assert parse_args(["--pre-import", text]).pre_import == names


@pytest.mark.parametrize("text", ["dask-ml", "2fast", "a..b", "a b"])
def test_what_is_no_module_name_is_refused(text):
    with pytest.raises(ValueError, match="not a module name"):
        parse_modules(text)


def test_defaults_name_cupy_only_on_gpu_workers_where_it_is_installed():
    assert modules_for(None, gpu_worker=True, has_cupy=True) == ["dask.array", "cupy"]
    assert modules_for(None, gpu_worker=True, has_cupy=False) == ["dask.array"]
    assert modules_for(None, gpu_worker=False, has_cupy=True) == ["dask.array"]
    assert parse_args([]).pre_import is None


def test_modules_asked_for_replace_the_defaults():
    assert modules_for(["cudf"], gpu_worker=True, has_cupy=True) == ["cudf"]
    assert modules_for([], gpu_worker=True, has_cupy=True) == []


def test_a_module_not_installed_is_named_with_its_node():
    check_modules(["json.tool", "colorsys"], "n1")  # installed: nothing to say
    with pytest.raises(LaunchError, match="no module named 'no_such.sub' on n1"):
        check_modules(["json", "no_such.sub"], "n1")


# --- in advance, and never at the same time as a task's own imports -----------

# Imported whole by one thread, in either order, this package is fine; but a
# thread that imports racepkg.sub while another is still inside racepkg's
# __init__ finds racepkg there (half made: Python does not wait for a parent
# package) and holds racepkg.sub while it waits for racepkg, which then, past
# its sleep, asks for racepkg.sub: Python breaks that deadlock by handing one
# of them a half-made module.  So did dask.array, imported in the background
# while a restarted worker's first task imported dask.array.creation.
RACE_PACKAGE = {
    "__init__.py": "import time\ntime.sleep(3)\nfrom racepkg.sub import thing\n",
    "sub.py": "import racepkg\n\n\ndef thing():\n    return 42\n",
}
RACE_SCRIPT = """
from distributed import get_client


def use():
    import racepkg.sub
    return racepkg.sub.thing()


client = get_client()
print("ON A WORKER", client.submit(use, pure=False).result())
print("ON THE SCHEDULER", client.run_on_scheduler(use))
"""


@pytest.mark.timeout(120)
@pytest.mark.parametrize("nanny", ["--nanny", "--no-nanny"])
def test_a_module_imported_in_advance_is_never_half_made_for_a_task(tmp_path, loopback, nanny):
    """--pre-import racepkg, and a first task (and a first call on the scheduler)
    that imports racepkg.sub at once: each finds racepkg whole."""
    from launch import PACKAGE_PATH, launch

    package = tmp_path / "packages" / "racepkg"
    package.mkdir(parents=True)
    for name, text in RACE_PACKAGE.items():
        (package / name).write_text(text)
    script = tmp_path / "race.py"
    script.write_text(RACE_SCRIPT)
    run = launch([*loopback, nanny, "--pre-import", "racepkg", str(script)], np=3,
                 env={"PYTHONPATH": os.pathsep.join([str(package.parent), PACKAGE_PATH])})
    assert run.rc == 0 and run.leftovers == [], run
    assert "ON A WORKER 42" in run.stdout and "ON THE SCHEDULER 42" in run.stdout, run
    assert "in advance failed" not in run.output and "partially initialized" not in run.output
    logs = "".join(p.read_text() for p in (tmp_path / "logs").glob("*.log"))
    assert "partially initialized" not in logs and "in advance failed" not in logs
