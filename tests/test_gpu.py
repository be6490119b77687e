"""On a real NVIDIA GPU: each worker sees its one GPU, and CuPy runs there.

Skipped where there is no GPU or no CuPy (CI); run on a GPU machine with
``pytest tests/test_gpu.py``.
"""
from __future__ import annotations

import importlib.util
import json
import re
import sys

import pytest

from launch import NEEDS_MPIRUN, PACKAGE_PATH, SCRIPTS, launch, notebook_sums, report
from start_daskmpi.plan.gpus import count_gpus

GPUS = count_gpus()  # NVML or nvidia-smi: no CUDA context in the test process


def needs(*modules: str) -> pytest.MarkDecorator:
    """Skip where one of ``modules`` is not installed."""
    missing = [name for name in modules if importlib.util.find_spec(name) is None]
    return pytest.mark.skipif(bool(missing), reason=f"no {', '.join(missing)}")


pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(GPUS == 0, reason="no NVIDIA GPU"),
    needs("cupy"),
]


def gpu_report(run) -> dict:
    (line,) = [line for line in run.stdout.splitlines() if line.startswith("GPU ")]
    return json.loads(line.removeprefix("GPU "))


def check_workers(seen: dict, count: int) -> None:
    workers = list(seen["workers"].values())
    assert len(workers) == count
    assert sorted(w["visible"] for w in workers) == [str(i) for i in range(count)]
    assert {w["count"] for w in workers} == {1}  # pinned: each sees exactly one GPU
    assert len({w["pci_bus"] for w in workers}) == count  # and each a different one
    assert {w["total"] for w in workers} == {(10**6 - 1) * 10**6 // 2}
    assert seen["chunk_module"].startswith("cupy")
    assert abs(seen["sum"] - 2000**2 * 11) < 6 * 2000
    # Every worker holds a CUDA context; neither the scheduler nor the driver
    # does (one process in local mode): cupy_test makes its arrays on the workers.
    assert seen["gpu_pids"], "NVML lists no process: the check below would prove nothing"
    assert set(seen["gpu_pids"]) == {w["pid"] for w in workers}, seen


def launch_on_gpus(tmp_path, args: list[str], timeout: float = 150):
    """``mpirun`` with one worker rank per GPU of this node, its logs in the test's folder."""
    run = launch(["--log-dir", str(tmp_path / "logs"), *args], np=GPUS + 2, timeout=timeout)
    print(run)
    return run


@pytest.mark.timeout(180)
@NEEDS_MPIRUN
def test_one_worker_per_gpu_under_mpirun(tmp_path):
    run = launch_on_gpus(tmp_path, ["--interface", "lo", str(SCRIPTS / "cupy_on_worker.py")])
    assert run.rc == 0 and run.leftovers == [] and "Traceback" not in run.output, run
    check_workers(gpu_report(run), GPUS)


@pytest.mark.timeout(180)
def test_local_mode_uses_every_gpu(tmp_path):
    run = launch(
        ["--log-dir", str(tmp_path / "logs"), str(SCRIPTS / "cupy_on_worker.py")], timeout=150
    )
    print(run)
    assert run.rc == 0 and run.leftovers == [] and "Traceback" not in run.output, run
    check_workers(gpu_report(run), GPUS)


@pytest.mark.timeout(300)
@NEEDS_MPIRUN
def test_cupy_test_runs_its_gpu_part(tmp_path):
    cupy_test = str(SCRIPTS.parent.parent / "cupy_test.py")
    run = launch_on_gpus(tmp_path, ["--interface", "lo", cupy_test], timeout=280)
    assert run.rc == 0 and run.leftovers == [], run
    assert run.stdout.count("elapsed time:") == 2 and "skipped" not in run.stdout
    assert run.stdout.count(": ok") == 2


@pytest.mark.timeout(180)
@needs("dask_cuda", "rmm")
@pytest.mark.parametrize("under_mpirun", [True, False], ids=["mpirun", "local"])
def test_dask_cuda_options_reach_the_worker(tmp_path, under_mpirun):
    """Under mpirun and in local mode alike: the same dask-cuda workers, logging
    to their own files."""
    args = ["--log-dir", str(tmp_path / "logs"), "--interface", "lo",
            "--rmm-pool-size", "2GB", "--device-memory-limit", "1GB",
            str(SCRIPTS / "dask_cuda_on_worker.py")]
    run = launch(args, np=GPUS + 2 if under_mpirun else None, timeout=150)
    assert run.rc == 0 and run.leftovers == [] and "Traceback" not in run.output, run
    (line,) = [s for s in run.stdout.splitlines() if s.startswith("DASKCUDA ")]
    workers = list(json.loads(line.removeprefix("DASKCUDA ")).values())
    assert len(workers) == GPUS
    for seen in workers:
        assert seen["resource"] == "PoolMemoryResource"
        assert seen["allocator"] == "rmm_cupy_allocator"
        assert seen["store"] == "DeviceHostFile"  # device -> host -> disk spilling
        assert seen["sum"] == 10**6
    pattern = "rank*-worker-process.log" if under_mpirun else "worker-*.log"
    logs = sorted((tmp_path / "logs").glob(pattern))
    assert len(logs) == GPUS and all("Start worker at" in log.read_text() for log in logs)


@pytest.mark.timeout(180)
@NEEDS_MPIRUN
@needs("distributed_ucxx")
def test_ucx_protocol_carries_the_cluster(tmp_path):
    run = launch_on_gpus(
        tmp_path, ["--no-tls", "--protocol", "ucx", str(SCRIPTS / "cupy_on_worker.py")]
    )
    assert run.rc == 0 and run.leftovers == [] and "Traceback" not in run.output, run
    assert "Scheduler address: ucx://" in run.stdout
    check_workers(gpu_report(run), GPUS)


@pytest.mark.timeout(300)
@NEEDS_MPIRUN
@needs("nbclient", "ipykernel")
def test_the_notebooks_gpu_cells_run_in_a_kernel(tmp_path):
    notebook = SCRIPTS.parent.parent / "jupyterlab_cupy_test.ipynb"
    run = launch_on_gpus(
        tmp_path, ["--interface", "lo", str(SCRIPTS / "run_notebook.py"), str(notebook)],
        timeout=280,
    )
    assert run.rc == 0 and run.leftovers == [], run
    assert "CPU only" not in run.stdout
    assert notebook_sums(run.stdout).keys() == {"with gpus", "without gpus"}, run.stdout


@pytest.mark.timeout(180)
@NEEDS_MPIRUN
@needs("pynvml", "bokeh")
def test_the_dashboards_gpu_pages_show_each_workers_gpu(tmp_path):
    run = launch_on_gpus(tmp_path, ["--interface", "lo", str(SCRIPTS / "gpu_dashboard.py")])
    assert run.rc == 0 and run.leftovers == [] and "Traceback" not in run.output, run
    seen = report(run, "DASHBOARD")
    assert seen["status"] == 200 and seen["links_gpu_page"], seen
    assert seen["pages"] == dict.fromkeys(
        ["gpu", "individual-gpu-memory", "individual-gpu-utilization"], 200), seen
    assert len(seen["gpus"]) == GPUS, seen
    for gpu in seen["gpus"].values():  # from NVML on each worker, for its own GPU
        assert gpu["name"] and gpu["memory-total"] > 0 and "utilization" in gpu, seen


@pytest.mark.timeout(180)
@NEEDS_MPIRUN
@pytest.mark.parametrize("how, np, worker_ranks", [
    ("initialize", GPUS + 3, range(2, GPUS + 2)),  # one rank more than the GPUs: it idles
    ("shared", GPUS, range(GPUS)),  # execute(): rank 0's worker beside scheduler and client
])
def test_dask_mpis_api_gives_each_gpu_a_worker(how, np, worker_ranks, tmp_path):
    run = launch([str(SCRIPTS / "api_on_gpus.py"), how], np=np, timeout=150,
                 launcher=[sys.executable], env={"PYTHONPATH": PACKAGE_PATH, "HOME": str(tmp_path)})
    print(run)
    assert run.rc == 0 and run.leftovers == [] and "Traceback" not in run.output, run
    seen = report(run, "API")
    assert seen["names"] == list(worker_ranks)  # the ranks, as dask-mpi names them
    assert seen["resources"] == ["{'GPU': 1}"] * GPUS
    assert all(seen["gpu_names"]), seen  # no nanny: NVML started in the rank's process
    assert [s["visible"] for s in seen["seen"]] == [str(i) for i in range(GPUS)]
    assert {s["count"] for s in seen["seen"]} == {1}
    assert len({s["pci_bus"] for s in seen["seen"]}) == GPUS
    assert {s["sum"] for s in seen["seen"]} == {499500.0}
    if how == "initialize":
        assert f"-np {GPUS + 2}" in run.stderr  # the idle rank's warning says what fits


KILLED_GPU_WORKER = """
import os, signal, time
import dask.array as da
from distributed import get_client
client = get_client()
(pid,) = client.run(os.getpid).values()  # the one GPU worker's process
future = client.compute((da.random.random((4000, 4000), chunks=500) + 1).sum())
time.sleep(0.3)
os.kill(pid, signal.SIGKILL)  # as the OOM killer, or a crashed CUDA kernel, would
print("SUM", future.result(), flush=True)
"""


@NEEDS_MPIRUN
@pytest.mark.timeout(600)
def test_a_killed_gpu_worker_comes_back_and_the_job_ends_right(tmp_path):
    """Its nanny restarts it on its GPU, with its pre-imports (dask.array,
    CuPy) done before it takes a task: the result is right, status 0, four
    runs in four (2 in 4 failed when the pre-imports ran beside the task)."""
    script = tmp_path / "kills.py"
    script.write_text(KILLED_GPU_WORKER)
    for attempt in range(4):
        run = launch(["--interface", "lo", "--log-dir", str(tmp_path / f"logs{attempt}"),
                      str(script)], np=3, timeout=150)
        assert run.rc == 0 and run.leftovers == [], run
        total = float(re.search(r"^SUM (\S+)$", run.stdout, re.M)[1])
        assert abs(total - 1.5 * 4000**2) < 6 * (4000**2 / 12) ** 0.5, run
        assert "partially initialized" not in run.output and "Traceback" not in run.output
