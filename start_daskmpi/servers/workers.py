"""The workers each role runs, built the same way under mpirun and in a local
cluster: a worker per GPU (dask-cuda's where it applies, else distributed's,
behind a nanny unless --no-nanny), pinned to its GPU, and closed in order."""
from __future__ import annotations

import asyncio
import contextlib
import importlib.util
import os
import signal
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import dask
import psutil
from distributed import Nanny, Security, Worker

from start_daskmpi.plan.config import Config
from start_daskmpi.plan.gpus import NVIDIA_PIN, uses_dask_cuda
from start_daskmpi.plan.layout import Role
from start_daskmpi.servers.info import bound_to, comm_protocol
from start_daskmpi.servers.logs import log_to_file
from start_daskmpi.servers.pre_imports import import_each, modules_for

STARTUP_MARGIN = 10.0  # seconds a worker keeps trying to start after the driver gave up
WORKERS_LEAVE_TIMEOUT = 10.0  # seconds the scheduler waits at the end for workers to close


class HeartbeatsEndBeforeTheClose:
    """For distributed's Worker: its close waits for a heartbeat in flight
    (bounded), and no heartbeat starts once it is closing.  Else a heartbeat
    begun just before the close meets the connections the close shuts (or
    the scheduler's, closing too), and distributed logs an ERROR with a
    traceback after a clean run (2 runs in 14, under load)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.heartbeating = asyncio.Lock()
        self.heartbeat_task: asyncio.Task | None = None
        self.closing_soon = False

    async def heartbeat(self) -> None:
        async with self.heartbeating:
            if self.closing_soon:
                return
            self.heartbeat_task = asyncio.current_task()
            try:
                await super().heartbeat()  # type: ignore[misc]
            finally:
                self.heartbeat_task = None

    async def close(self, *args: Any, **kwargs: Any) -> Any:
        self.closing_soon = True
        if asyncio.current_task() is not self.heartbeat_task:  # not the heartbeat's own close
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self.heartbeat_over(), HEARTBEAT_WAIT)
        return await super().close(*args, **kwargs)  # type: ignore[misc]

    async def heartbeat_over(self) -> None:
        async with self.heartbeating:
            pass


HEARTBEAT_WAIT = 5.0  # seconds a worker's close waits for its heartbeat in flight


def with_heartbeats_ended_first(cls: type[Worker]) -> type[Worker]:
    """``cls`` (distributed's Worker, or the Python API user's own class), its
    heartbeats ended before its close."""
    if issubclass(cls, HeartbeatsEndBeforeTheClose):
        return cls
    return type(cls.__name__, (HeartbeatsEndBeforeTheClose, cls), {"__module__": cls.__module__})


class NannyWorker(HeartbeatsEndBeforeTheClose, Worker):
    """The worker a nanny spawns: the first code of ours in that process.

    It logs to ``log_file`` (the process re-imports distributed, whose logging
    goes to stderr), imports ``pre_imports`` before the Worker exists (none
    twice: a fork server's child has them), and leaves SIGINT, SIGTERM and
    SIGHUP, which mpirun sends its ranks' whole process groups (and a closed
    terminal its job's), to the nanny, which
    closes it in order (and would restart it, were it killed by them).
    """

    def __init__(
        self, *args: Any, log_file: str, verbose: bool, pre_imports: list[str],
        gpu_metrics: bool, **kwargs: Any
    ) -> None:
        log_to_file(log_file, verbose)
        for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
            signal.signal(signum, signal.SIG_IGN)
        import_each(pre_imports)
        if gpu_metrics:
            start_gpu_metrics()
        super().__init__(*args, **kwargs)


def start_gpu_metrics() -> None:
    """Start NVML in this process before its Worker is made.  Distributed adds
    the GPU's metrics (what the dashboard's GPU pages plot) to every Worker's
    defaults once NVML starts in the process; but a Worker copies those defaults
    as it is made, before its own system monitor starts NVML: without this, no
    worker would report its GPU."""
    from distributed.diagnostics import nvml

    nvml.device_get_count()


def worker_options(
    role: Role, config: Config, security: Security, scratch: str | Path, interface: str | None
) -> dict[str, Any]:
    return {**dict(
        name=role.name,
        nthreads=role.nthreads,
        memory_limit=role.memory_limit,
        resources={"GPU": 1} if role.gpu is not None else None,
        local_directory=str(scratch),
        **bound_to(interface),
        protocol=comm_protocol(config),
        security=security,
        # The worker's own HTTP server only serves metrics; keep it off the network.
        dashboard_address="127.0.0.1:0",
        # Past the driver's own wait, so that the driver names the missing workers.
        death_timeout=config.run.startup_timeout + STARTUP_MARGIN,
        # None: Dask's config (distributed.worker.preload) decides, as it would.
        preload=config.workers.preload,
    ), **config.workers.worker_options}  # the Python API's, over ours, as dask-mpi gives them


@contextlib.contextmanager
def environment(variables: Mapping[str, str]) -> Iterator[None]:
    """``variables`` in os.environ for the block, as they were after it."""
    saved = {name: os.environ.get(name) for name in variables}
    os.environ.update(variables)
    try:
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def make_worker(
    address: str, role: Role, config: Config, security: Security, log_file: Path,
    scratch: str | Path, interface: str | None,
) -> Any:
    """``role``'s worker, not yet started (each kind starts when awaited), its
    spilled data in ``scratch`` (security.private.private_scratch), listening on
    ``interface`` (None: loopback).

    The one place that pins a worker to its GPU, as each kind needs it."""
    # Its HTTP server listens on 127.0.0.1, which every user of the node reaches:
    # it says whether the worker is alive, and no more (its metrics would show
    # its tasks' states and memory).  Read as a worker starts, in this process's
    # config or the one a nanny hands its worker process.
    dask.config.set({"distributed.worker.http.routes": ["distributed.http.health"]})
    options = worker_options(role, config, security, scratch, interface)
    pre_imports = worker_pre_imports(config, role)
    gpu_metrics = role.gpu is not None and role.pin == NVIDIA_PIN  # NVML's, for its GPU alone
    if not config.workers.nanny:
        # It runs in this process, which holds its GPU from now on.
        os.environ.update(role.environment())
        import_each(pre_imports)  # here, before the worker exists (pre_imports.py)
        if gpu_metrics:
            start_gpu_metrics()
        worker_class = with_heartbeats_ended_first(config.workers.worker_class or Worker)
        return worker_class(address, **options)
    # Not pre_import=: dask-cuda's worker takes a keyword of that name for itself.
    process = dict(worker_class=NannyWorker, log_file=str(log_file), verbose=config.run.verbose,
                   pre_imports=pre_imports, gpu_metrics=gpu_metrics)
    if not uses_dask_cuda(role.gpu, role.pin, config.workers.nanny):
        # The nanny gives it to each worker process it spawns, the first or a restart.
        return Nanny(address, **options, **process, env=role.environment())
    from dask_cuda import CUDAWorker

    resources = options.pop("resources")  # it takes them as its command line does
    # It adds its own preload to a list, and never asks Dask's config as a nanny does.
    options["preload"] = list(options["preload"] or dask.config.get("distributed.worker.preload"))
    # dask-cuda reads the GPUs to serve from this process's environment, at once:
    # one nanny, for this role's GPU, which it gives to that nanny's processes.
    with environment(role.environment()):
        return CUDAWorker(
            address,
            **options,
            **process,
            resources=",".join(f"{name}={count}" for name, count in resources.items()),
            **dask_cuda_memory_options(config),
        )


def worker_pre_imports(config: Config, role: Role) -> list[str]:
    has_cupy = importlib.util.find_spec("cupy") is not None
    return modules_for(config.workers.pre_import, role.gpu is not None, has_cupy)


def dask_cuda_memory_options(config: Config) -> dict[str, Any]:
    """Only what was asked for: each dask-cuda release has its own default
    (and older ones know fewer keywords)."""
    options: dict[str, Any] = {}
    if config.workers.rmm_pool_size:
        # Without the second, CuPy keeps allocating from its own pool, not RMM's.
        options.update(rmm_pool_size=config.workers.rmm_pool_size,
                       rmm_allocator_external_lib_list=["cupy"])
    if config.workers.device_memory_limit:
        options.update(device_memory_limit=config.workers.device_memory_limit)
    return options


async def stop_worker(server: Any) -> None:
    """Close a worker of make_worker's, started or not.  A start cut short
    leaves a nanny "starting": its close may then assert, or leave the worker
    process running, which ignores SIGTERM: kill that process."""
    nannies = getattr(server, "nannies", [server])  # dask-cuda's worker is nannies
    # Taken before the close: psutil then never mistakes a reused pid for ours.
    processes = []
    for nanny in nannies:
        with contextlib.suppress(psutil.Error):
            if isinstance(nanny, Nanny) and nanny.pid:
                processes.append(psutil.Process(nanny.pid))
    with contextlib.suppress(Exception):
        if isinstance(server, Worker):  # a task still running is abandoned, not awaited
            await server.close(executor_wait=False)
        else:
            await server.close()
    for process in processes:
        with contextlib.suppress(psutil.Error):
            process.kill()
    psutil.wait_procs(processes, timeout=WORKERS_LEAVE_TIMEOUT)
