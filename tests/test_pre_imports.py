"""What each process pre-imports, and the option that says so (no MPI)."""
from __future__ import annotations

import pytest

from start_daskmpi.errors import LaunchError
from start_daskmpi.options import parse_args
from start_daskmpi.pre_imports import check_modules, modules_for, parse_modules


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
