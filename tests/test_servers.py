"""The servers each role makes, without starting them: the GPU pin, the
nanny's worker class and log, the one rule for dask-cuda's options."""
from __future__ import annotations

import asyncio
import importlib.metadata
import importlib.util
import inspect
import os
import subprocess
import sys
import threading
from pathlib import Path
from types import SimpleNamespace

import pytest
from distributed import Nanny, Security, Worker
from distributed.core import Status

from launch import PACKAGE_PATH
from start_daskmpi.errors import LaunchError
from start_daskmpi.lifecycle.checks import check_dask_cuda
from start_daskmpi.plan.config import from_argv
from start_daskmpi.plan.gpus import uses_dask_cuda
from start_daskmpi.plan.layout import Role
from start_daskmpi.servers import scheduler as servers
from start_daskmpi.servers.scheduler import start_scheduler
from start_daskmpi.servers.workers import (
    NannyWorker,
    dask_cuda_memory_options,
    environment,
    make_worker,
)

GPU_WORKER = Role(2, "worker", "n", "n-gpu3", "3", 1, 2**30)
AMD_WORKER = Role(2, "worker", "n", "n-gpu3", "3", 1, 2**30, pin="ROCR_VISIBLE_DEVICES")
CPU_WORKER = Role(2, "worker", "n", "n-cpu0", None, 2, 2**30)


@pytest.fixture(autouse=True)
def without_dask_cuda(request, monkeypatch):
    """distributed's workers, also where dask-cuda is installed (a GPU node);
    the tests that ask for dask_cuda_installed get it instead."""
    if "dask_cuda_installed" in request.fixturenames:
        return
    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec",
        lambda name, *a: None if name == "dask_cuda" else real(name, *a),
    )


def made(role: Role, argv: list[str], tmp_path: Path):
    config = from_argv([*argv, "--local-directory", str(tmp_path)])

    async def construct():
        return make_worker("tcp://127.0.0.1:1", role, config, Security(), tmp_path / "w.log",
                           str(tmp_path / "scratch"), None)

    return asyncio.run(construct())


def test_a_nanny_gives_its_worker_process_the_pin_and_the_log(tmp_path):
    nanny = made(GPU_WORKER, [], tmp_path)
    assert isinstance(nanny, Nanny)
    assert nanny.env["CUDA_VISIBLE_DEVICES"] == "3"
    assert nanny.Worker is NannyWorker
    assert nanny.worker_kwargs["log_file"] == str(tmp_path / "w.log")
    assert nanny.worker_kwargs["gpu_metrics"]  # NVML started before the Worker is made
    assert nanny.resources == {"GPU": 1}


def test_another_makers_pin_is_its_own_variable(tmp_path):
    nanny = made(AMD_WORKER, [], tmp_path)
    assert nanny.env["ROCR_VISIBLE_DEVICES"] == "3" and "CUDA_VISIBLE_DEVICES" not in nanny.env
    assert not nanny.worker_kwargs["gpu_metrics"]  # NVML knows only NVIDIA's


def test_a_cpu_worker_has_no_pin_and_no_gpu_resource(tmp_path):
    nanny = made(CPU_WORKER, [], tmp_path)
    assert "CUDA_VISIBLE_DEVICES" not in nanny.env and not nanny.resources
    assert not nanny.worker_kwargs["gpu_metrics"]  # no GPU of the node's to report as its own


def test_without_a_nanny_this_process_holds_the_gpu(tmp_path, monkeypatch):
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")  # noted, so that the test's pin is undone
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES")
    first_gpu = Role(2, "worker", "n", "n-gpu0", "0", 1, 2**30)  # one a GPU node has
    worker = made(first_gpu, ["--no-nanny"], tmp_path)
    # distributed's Worker (its heartbeats ended before its close), not a nanny
    assert isinstance(worker, Worker) and type(worker).__name__ == "Worker"
    assert os.environ["CUDA_VISIBLE_DEVICES"] == "0"


def test_environment_is_restored(monkeypatch):
    monkeypatch.setenv("A_VARIABLE", "before")
    monkeypatch.delenv("B_VARIABLE", raising=False)
    with environment({"A_VARIABLE": "x", "B_VARIABLE": "y"}):
        assert os.environ["A_VARIABLE"] == "x" and os.environ["B_VARIABLE"] == "y"
    assert os.environ["A_VARIABLE"] == "before" and "B_VARIABLE" not in os.environ


@pytest.fixture
def dask_cuda_installed(monkeypatch):
    """As if dask-cuda and RMM were installed (they need a GPU's CUDA); the
    version of dask-cuda is the fixture's ``release`` attribute."""
    real, real_version = importlib.util.find_spec, importlib.metadata.version
    monkeypatch.setattr(
        importlib.util, "find_spec",
        lambda name, *a: object() if name in ("dask_cuda", "rmm") else real(name, *a),
    )
    installed = SimpleNamespace(release="26.10.0")
    monkeypatch.setattr(
        importlib.metadata, "version",
        lambda name: installed.release if name == "dask-cuda" else real_version(name),
    )
    return installed


def test_one_rule_for_dask_cuda(dask_cuda_installed):
    assert uses_dask_cuda("3", "CUDA_VISIBLE_DEVICES", nanny=True)
    assert not uses_dask_cuda("3", "CUDA_VISIBLE_DEVICES", nanny=False)
    assert not uses_dask_cuda(None, "CUDA_VISIBLE_DEVICES", nanny=True)
    assert not uses_dask_cuda("3", "ROCR_VISIBLE_DEVICES", nanny=True)


@pytest.mark.parametrize("role, argv, words", [
    (CPU_WORKER, ["--rmm-pool-size", "1GB"], "the workers on n run on the CPU"),
    (AMD_WORKER, ["--device-memory-limit", "0.8"], "pinned by ROCR_VISIBLE_DEVICES"),
    (GPU_WORKER, ["--no-nanny", "--rmm-pool-size", "1GB"], "drop --no-nanny"),
])
def test_dask_cuda_options_where_no_dask_cuda_worker_runs_are_an_error(
    dask_cuda_installed, role, argv, words
):
    with pytest.raises(LaunchError, match=words):
        check_dask_cuda(role, from_argv(argv))


def test_dask_cuda_options_on_an_nvidia_gpu_pass(dask_cuda_installed):
    check_dask_cuda(GPU_WORKER, from_argv(["--rmm-pool-size", "1GB"]))


def test_a_dask_cuda_too_old_for_the_rmm_pool_says_so_at_start(dask_cuda_installed):
    dask_cuda_installed.release = "24.8.2"
    with pytest.raises(LaunchError) as raised:
        check_dask_cuda(GPU_WORKER, from_argv(["--rmm-pool-size", "1GB"]))
    assert str(raised.value) == (
        "--rmm-pool-size needs dask-cuda 24.12 or later (this node has 24.8.2): "
        "pip install -U 'dask-cuda>=24.12', or drop --rmm-pool-size"
    )
    check_dask_cuda(GPU_WORKER, from_argv(["--device-memory-limit", "0.8"]))


@pytest.mark.parametrize("argv, asked", [
    ([], {}),
    (["--device-memory-limit", "0.8"], {"device_memory_limit": "0.8"}),
    (["--rmm-pool-size", "70GB"],
     {"rmm_pool_size": "70GB", "rmm_allocator_external_lib_list": ["cupy"]}),
])
def test_dask_cuda_is_given_only_what_was_asked(argv, asked):
    """Every other keyword keeps the installed dask-cuda's default, which
    differs by release (and older ones refuse newer keywords)."""
    assert dask_cuda_memory_options(from_argv(argv)) == asked


@pytest.mark.parametrize("argv, config, preload", [
    ([], [], []),
    ([], ["from_config"], ["from_config"]),  # as a nanny of distributed's takes it
    (["--preload", "mine"], ["from_config"], ["mine"]),
])
def test_dask_cuda_gets_the_preloads_as_a_list(dask_cuda_installed, monkeypatch, tmp_path,
                                                argv, config, preload):
    """dask-cuda appends its own preload to the list it is given (a None failed
    every GPU worker at once), and does not read Dask's config for it."""
    import dask

    given = {}

    class CUDAWorker:  # dask-cuda's, as far as the launcher uses it
        def __init__(self, address, *, preload=(), pre_import=None, **options):
            # What it does not take for itself goes through the nanny to the worker
            # class, which must get every keyword it requires (pre_import once went).
            required = {name for name, p in inspect.signature(NannyWorker).parameters.items()
                        if p.kind is p.KEYWORD_ONLY and p.default is p.empty}
            assert required <= set(options), options
            given.update(options, preload=list(preload) + ["dask_cuda.initialize"])

    monkeypatch.setitem(sys.modules, "dask_cuda", SimpleNamespace(CUDAWorker=CUDAWorker))
    with dask.config.set({"distributed.worker.preload": config}):
        made(GPU_WORKER, argv, tmp_path)
    assert given["preload"] == [*preload, "dask_cuda.initialize"]
    assert given["resources"] == "GPU=1"


def test_dask_cuda_options_without_dask_cuda_say_what_to_install():
    with pytest.raises(LaunchError, match="comes from dask-cuda: pip install dask-cuda"):
        check_dask_cuda(GPU_WORKER, from_argv(["--rmm-pool-size", "1GB"]))


def test_the_protocol_each_server_speaks(tmp_path):
    """TLS unless --no-tls; then what --protocol says, else Dask's default."""
    from start_daskmpi.servers.info import comm_protocol
    from start_daskmpi.servers.scheduler import scheduler_options

    assert comm_protocol(from_argv(["job.py"])) == "tls"
    assert comm_protocol(from_argv(["--no-tls", "job.py"])) is None
    assert comm_protocol(from_argv(["--no-tls", "--protocol", "ucx", "job.py"])) == "ucx"
    config = from_argv(["--no-tls", "--protocol", "ucx", "--scheduler-port", "0", "job.py"])
    assert scheduler_options(config, Security(), Path("/private"), None)["protocol"] == "ucx"
    nanny = made(CPU_WORKER, ["--no-tls", "--protocol", "ucx"], tmp_path)
    assert nanny.worker_kwargs["protocol"] == "ucx"  # what its worker process listens on


def test_the_scheduler_rank_imports_what_its_start_will_meanwhile(tmp_path):
    """In a fresh interpreter: once scheduler_modules() are imported, starting
    the scheduler (dashboard on) imports next to nothing of distributed's."""
    code = (
        "import asyncio, importlib, sys, dask\n"
        "from start_daskmpi.servers.scheduler import dashboard_routes, scheduler_modules\n"
        "from distributed import Scheduler\n"
        "names = scheduler_modules(dashboard=True)\n"
        "assert 'distributed.http.proxy' not in names, names\n"
        "for name in names: importlib.import_module(name)\n"
        "before = set(sys.modules)\n"
        "async def start():\n"
        "    with dask.config.set({'distributed.scheduler.http.routes': dashboard_routes()}):\n"
        "        async with Scheduler(interface='lo', dashboard_address='127.0.0.1:0'):\n"
        "            pass\n"
        "asyncio.run(start())\n"
        "print(sorted(m for m in set(sys.modules) - before if m.startswith('distributed.')))\n"
    )
    done = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True,
                          text=True, timeout=60, env={**os.environ, "PYTHONPATH": PACKAGE_PATH})
    assert done.returncode == 0, done.stderr
    assert len(eval(done.stdout.strip().splitlines()[-1])) <= 3, done.stdout


def test_without_a_nanny_the_pre_imports_are_done_before_the_worker_exists(
    tmp_path, monkeypatch
):
    """Imported on the worker's thread before it exists: none is in progress
    when its first task imports a module (pre_imports.py)."""
    (tmp_path / "imported_early.py").write_text(
        "import threading\nIMPORTED_ON = threading.current_thread()\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    config = from_argv(["--no-nanny", "--no-tls", "--pre-import", "imported_early",
                       "--local-directory", str(tmp_path)])
    try:
        worker = make_worker("tcp://127.0.0.1:1", CPU_WORKER, config, Security(),
                             tmp_path / "w.log", str(tmp_path / "scratch"), None)
        assert worker.status == Status.init
        assert sys.modules["imported_early"].IMPORTED_ON is threading.current_thread()
    finally:
        sys.modules.pop("imported_early", None)


def test_the_schedulers_pre_imports_are_done_before_it_starts(tmp_path, monkeypatch):
    (tmp_path / "imported_by_the_scheduler.py").write_text("")
    monkeypatch.syspath_prepend(str(tmp_path))
    config = from_argv(["--no-tls", "--interface", "lo", "--pre-import",
                       "imported_by_the_scheduler"])
    order = []
    monkeypatch.setattr(servers, "import_each", lambda names: order.append(("import", names)))
    real = servers.Scheduler

    def made(**options):
        order.append(("made", None))
        return real(**options)

    monkeypatch.setattr(servers, "Scheduler", made)

    async def run():
        scheduler, _ = await start_scheduler(config, Security(), tmp_path, "lo")
        await scheduler.close()

    asyncio.run(run())
    assert order == [("import", ["imported_by_the_scheduler"]), ("made", None)]
