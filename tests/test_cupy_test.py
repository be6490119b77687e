"""cupy_test.py's own logic, on an in-process CPU cluster (no MPI, no GPU)."""
from __future__ import annotations

import importlib.util
import re

import pytest
from distributed import Client, LocalCluster

import cupy_test


@pytest.fixture
def cluster_with(request):
    """A client of a small in-process cluster, its workers with ``request.param`` resources."""
    cluster = LocalCluster(
        n_workers=1, threads_per_worker=2, processes=False, dashboard_address=None,
        resources=request.param,
    )
    with cluster, Client(cluster) as client:
        yield client


def test_expected_sum_counts_every_other_row_and_column():
    assert cupy_test.expected_sum(5) == (9 * 11.0, 3.0)  # a 3 x 3 slice
    assert cupy_test.expected_sum(4) == (4 * 11.0, 2.0)
    assert cupy_test.tolerance(500000) == 6 * 250000


def test_default_chunks_are_a_quarter_of_the_size_at_most_20000():
    assert cupy_test.parse_args([]).chunks == 2500
    assert cupy_test.parse_args(["--size", "500000"]).chunks == 20000
    assert cupy_test.parse_args(["--size", "3"]).chunks == 1
    with pytest.raises(SystemExit):
        cupy_test.parse_args(["--size", "0"])


@pytest.mark.timeout(120)
@pytest.mark.parametrize("cluster_with", [None], indirect=True)
def test_cpu_part_runs_and_is_checked_and_gpu_part_says_why_not(cluster_with, capsys):
    assert cupy_test.main(["--size", "400", "--chunks", "100", "--repeat", "2"]) == 0
    out = capsys.readouterr().out
    assert out.startswith(f"Operation on dask.array (from {cupy_test.BLOG}):\n")
    assert "with gpus\n    skipped: the cluster has no GPU workers" in out
    assert re.search(
        r"without gpus\nelapsed time: [\d.]+ s\n"
        r"    first call [\d.]+ s; steady state median of 2: [\d.]+, [\d.]+ s\n", out
    ), out
    assert re.search(r"sum = [\d.]+, expected 440000 \+- 1\.2e\+03: ok", out), out


@pytest.mark.timeout(120)
@pytest.mark.parametrize("cluster_with", [None], indirect=True)
def test_a_wrong_sum_is_exit_status_1(cluster_with, capsys, monkeypatch):
    monkeypatch.setattr(cupy_test, "expected_sum", lambda size: (0.0, 1.0))
    assert cupy_test.main(["--size", "200", "--chunks", "100", "--repeat", "0"]) == 1
    assert ": WRONG" in capsys.readouterr().out


@pytest.mark.timeout(120)
@pytest.mark.skipif(importlib.util.find_spec("cupy") is not None, reason="CuPy is installed")
@pytest.mark.parametrize("cluster_with", [{"GPU": 1}], indirect=True)
def test_gpu_workers_without_cupy_say_how_to_get_it(cluster_with, capsys):
    assert cupy_test.main(["--size", "200", "--chunks", "100", "--repeat", "0"]) == 0
    assert "skipped: CuPy is not installed (pip install 'start-daskmpi[gpu]')" in (
        capsys.readouterr().out
    )


def test_tasks_are_restricted_only_to_a_part_of_the_cluster():
    assert cupy_test.restriction(["tls://a:1", "tls://b:1"], ["tls://b:1", "tls://a:1"]) is None
    assert cupy_test.restriction(["tls://a:1"], ["tls://a:1", "tls://b:1"]) == ["tls://a:1"]


@pytest.mark.timeout(120)
@pytest.mark.parametrize("cluster_with", [None], indirect=True)
def test_the_whole_clusters_part_leaves_its_tasks_to_the_schedulers_queue(
    cluster_with, monkeypatch
):
    asked = []
    compute = Client.compute

    def spy(self, *args, **kwargs):
        asked.append(kwargs.get("workers"))
        return compute(self, *args, **kwargs)

    monkeypatch.setattr(Client, "compute", spy)
    assert cupy_test.main(["--size", "200", "--chunks", "100", "--repeat", "1"]) == 0
    assert asked == [None, None]


@pytest.mark.timeout(60)
@pytest.mark.parametrize("ranks", [None, 3], ids=["python", "mpirun"])
def test_without_the_launcher_it_says_how_to_run_it_in_one_line(ranks):
    """``mpirun -np 3 python cupy_test.py``, the launcher forgotten: one line,
    from the first rank only, status 2; no traceback per rank."""
    import subprocess
    import sys

    from launch import ROOT, mpirun_prefix

    done = subprocess.run([*(mpirun_prefix(ranks) if ranks else []), sys.executable,
                           str(ROOT / "cupy_test.py")], capture_output=True, text=True,
                          timeout=50, cwd=ROOT)
    assert done.returncode == 2 and "Traceback" not in done.stderr, done
    lines = [line for line in done.stderr.splitlines() if line.startswith("cupy_test.py")]
    assert lines == [
        "cupy_test.py: error: no Dask cluster here. cupy_test.py runs on the launcher's "
        "cluster: mpirun -np 4 python start_daskmpi.py cupy_test.py (or python "
        "start_daskmpi.py cupy_test.py)"
    ], done
