"""The Dask servers each role runs, built the same way under mpirun and in a
local cluster: the scheduler, and a worker per GPU (dask-cuda's where it
applies, else distributed's, behind a nanny unless --no-nanny)."""
from __future__ import annotations

import argparse
import asyncio
import contextlib
import errno
import importlib.util
import logging
import os
import signal
import socket
import warnings
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import dask
import psutil
from distributed import Nanny, Scheduler, Security, Worker
from distributed.comm import connect
from distributed.core import rpc
from tornado.httpserver import HTTPServer
from tornado.netutil import bind_unix_socket

from .errors import LaunchError
from .gpus import NVIDIA_PIN, uses_dask_cuda
from .layout import Role
from .logs import log_to_file
from .network import listen_host
from .node import short_hostname
from .places import (
    DEFAULT_SCHEDULER_PORT,
    Endpoint,
    choose_port,
    dashboard_address,
    loopback_for,
    parse_host_port,
    port_is_free,
    port_taken,
)
from .pre_imports import import_each, modules_for
from .unmet_resources import UnmetResources

logger = logging.getLogger("start_daskmpi")

FAILURES_TOPIC = "start_daskmpi-failures"  # scheduler event topic for workers that failed to start
STARTUP_MARGIN = 10.0  # seconds a worker keeps trying to start after the driver gave up
WORKERS_LEAVE_TIMEOUT = 10.0  # seconds the scheduler waits at the end for workers to close
PORT_RACE_ATTEMPTS = 5  # starts of the scheduler on the next free port, when another took it
REACH_TIMEOUT = 5.0  # seconds a node's first rank tries to reach the scheduler at start
DASHBOARD_SOCKET = "dashboard.sock"  # in the scheduler's private folder


@dataclass(frozen=True)
class SchedulerInfo:
    """What the scheduler's rank tells the others once it listens."""

    address: str
    host: str
    fqdn: str
    dashboard: Endpoint | None  # on the scheduler's node; None: no dashboard
    # Where the driver's JupyterLab, on another node, gets the dashboard from
    # (dashboard_relay.py); None where no relay runs.
    dashboard_relay: str | None = None
    # Why 'stop' cannot reach the job, which reads it on this rank (terminal.py).
    unheard: str | None = None


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


def comm_protocol(args: argparse.Namespace) -> str | None:
    return "tls" if args.tls else args.protocol


def bound_to(interface: str | None) -> dict[str, Any]:
    """Where a server listens: its interface's address, else loopback; never
    every address, which would show it to every network the node is on."""
    return dict(interface=interface) if interface else dict(host="127.0.0.1")


def scheduler_options(
    args: argparse.Namespace, security: Security, folder: Path
) -> dict[str, Any]:
    """``folder``: the process's private folder, for the scheduler's scratch,
    which distributed puts first on sys.path (a shared /tmp/dask-scratch-space
    would let another user put modules there)."""
    host = listen_host(args.interface)
    port = choose_port(
        args.scheduler_port, DEFAULT_SCHEDULER_PORT,
        lambda p: port_is_free(host, p), "--scheduler-port",
    )
    return dict(
        **bound_to(args.interface),
        port=port,
        protocol=comm_protocol(args),
        security=security,
        local_directory=str(folder),
        dashboard=args.dashboard,
        # Without --dashboard-address, the dashboard moves to a socket before
        # the scheduler starts (serve_dashboard_privately): any port until then.
        dashboard_address=dashboard_address(
            args.dashboard_address, lambda h, p: p != port and port_is_free(h, p)
        ) if args.dashboard_address else "127.0.0.1:0",
    )


def serve_dashboard_privately(scheduler: Scheduler, path: Path) -> None:
    """Serve the scheduler's HTTP routes (the dashboard, its JSON, its metrics)
    on a Unix socket at ``path`` alone, in a private folder: a TCP port, even
    on loopback, shows workers, task keys, errors and logs to every user of
    the node.  Called once the scheduler is made and before it starts: the
    event loop has not run since distributed opened its port, so that port
    never accepted a connection."""
    scheduler.http_server.stop()
    server = HTTPServer(scheduler.http_application)
    server.add_socket(bind_unix_socket(str(path), mode=0o600))
    # distributed knows its dashboard by these two attributes (identity() reports
    # the service's port, and the scheduler's close stops each service): this
    # one has a socket and no port.
    server.port = None
    scheduler.http_server = scheduler.services["dashboard"] = server


def worker_options(
    role: Role, args: argparse.Namespace, security: Security, scratch: str | Path
) -> dict[str, Any]:
    return {**dict(
        name=role.name,
        nthreads=role.nthreads,
        memory_limit=role.memory_limit,
        resources={"GPU": 1} if role.gpu is not None else None,
        local_directory=str(scratch),
        **bound_to(args.interface),
        protocol=comm_protocol(args),
        security=security,
        # The worker's own HTTP server only serves metrics; keep it off the network.
        dashboard_address="127.0.0.1:0",
        # Past the driver's own wait, so that the driver names the missing workers.
        death_timeout=args.startup_timeout + STARTUP_MARGIN,
        # None: Dask's config (distributed.worker.preload) decides, as it would.
        preload=args.preload,
    ), **args.worker_options}  # the Python API's, over ours, as dask-mpi gives them


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
    address: str, role: Role, args: argparse.Namespace, security: Security, log_file: Path,
    scratch: str | Path,
) -> Any:
    """``role``'s worker, not yet started (each kind starts when awaited), its
    spilled data in ``scratch`` (places.private_scratch).

    The one place that pins a worker to its GPU, as each kind needs it."""
    # Its HTTP server listens on 127.0.0.1, which every user of the node reaches:
    # it says whether the worker is alive, and no more (its metrics would show
    # its tasks' states and memory).  Read as a worker starts, in this process's
    # config or the one a nanny hands its worker process.
    dask.config.set({"distributed.worker.http.routes": ["distributed.http.health"]})
    options = worker_options(role, args, security, scratch)
    pre_imports = worker_pre_imports(args, role)
    gpu_metrics = role.gpu is not None and role.pin == NVIDIA_PIN  # NVML's, for its GPU alone
    if not args.nanny:
        # It runs in this process, which holds its GPU from now on.
        os.environ.update(role.environment())
        import_each(pre_imports)  # here, before the worker exists (pre_imports.py)
        if gpu_metrics:
            start_gpu_metrics()
        return with_heartbeats_ended_first(args.worker_class or Worker)(address, **options)
    # Not pre_import=: dask-cuda's worker takes a keyword of that name for itself.
    process = dict(worker_class=NannyWorker, log_file=str(log_file), verbose=args.verbose,
                   pre_imports=pre_imports, gpu_metrics=gpu_metrics)
    if not uses_dask_cuda(role.gpu, role.pin, args.nanny):
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
            **dask_cuda_memory_options(args),
        )


def worker_pre_imports(args: argparse.Namespace, role: Role) -> list[str]:
    has_cupy = importlib.util.find_spec("cupy") is not None
    return modules_for(args.pre_import, role.gpu is not None, has_cupy)


def dask_cuda_memory_options(args: argparse.Namespace) -> dict[str, Any]:
    """Only what was asked for: each dask-cuda release has its own default
    (and older ones know fewer keywords)."""
    options: dict[str, Any] = {}
    if args.rmm_pool_size:
        # Without the second, CuPy keeps allocating from its own pool, not RMM's.
        options.update(rmm_pool_size=args.rmm_pool_size, rmm_allocator_external_lib_list=["cupy"])
    if args.device_memory_limit:
        options.update(device_memory_limit=args.device_memory_limit)
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


def dashboard_routes() -> list[str]:
    """The dashboard's routes but its /proxy/, which distributed serves where
    jupyter-server-proxy is installed: it relays to any host and port, as the
    job, for anyone who reaches the dashboard."""
    routes = dask.config.get("distributed.scheduler.http.routes")
    return [route for route in routes if route != "distributed.http.proxy"]


def scheduler_modules(dashboard: bool) -> list[str]:
    """What the scheduler's start imports (its HTTP routes, the dashboard's bokeh
    pages: most of its second of start), for its rank to import while the
    other ranks still start and agree on the layout."""
    pages = ["distributed.dashboard.scheduler"] if dashboard and has_bokeh() else []
    return [*dashboard_routes(), *pages]


def has_bokeh() -> bool:
    return importlib.util.find_spec("bokeh") is not None


async def start_scheduler(
    args: argparse.Namespace, security: Security, workers: int, folder: Path
) -> tuple[Scheduler, Endpoint | None]:
    """The scheduler on the port chosen for it, for ``workers`` workers, and
    where its dashboard is (None: none is served); its scratch and dashboard
    socket in ``folder``, the process's private folder.  Another launcher
    starting on this node at the same moment may bind a default port between
    our choice and our bind: then the next free port."""
    # The dashboard's port lost that way, distributed takes any free one and warns
    # in several lines ("Perhaps you already have a cluster running?"): the banner
    # prints the port it got, and a requested one is checked below instead.
    warnings.filterwarnings("ignore", r"Port \d+ is already in use", UserWarning)
    # Each graph is unpickled here: the modules its tasks name, imported now
    # (done already where the rank imported them before MPI started).
    import_each(modules_for(args.pre_import, gpu_worker=False, has_cupy=False))
    for _ in range(PORT_RACE_ATTEMPTS):
        options = scheduler_options(args, security, folder)
        try:
            with dask.config.set({"distributed.scheduler.http.routes": dashboard_routes()}):
                scheduler = Scheduler(**options)
            if args.dashboard_address is None:
                serve_dashboard_privately(scheduler, folder / DASHBOARD_SOCKET)
            await scheduler
        except Exception as e:
            cause = e.__cause__ or e
            raced = getattr(cause, "errno", None) == errno.EADDRINUSE
            if not raced or args.scheduler_port is not None:
                raise LaunchError(f"the scheduler failed to start: {cause}") from None
            continue
        await refuse_another_dashboard_port(scheduler, args.dashboard_address)
        scheduler.add_plugin(UnmetResources(scheduler))
        return scheduler, dashboard_endpoint(scheduler, args, folder / DASHBOARD_SOCKET)
    raise LaunchError(f"the scheduler failed to start: every port tried was taken: {cause}")


async def refuse_another_dashboard_port(scheduler: Scheduler, requested: str | None) -> None:
    """A dashboard port asked for is the one served, or the job stops, as it does
    when that port is seen taken before the start (places.choose_port)."""
    port = parse_host_port(requested)[1] if requested else 0
    dashboard = scheduler.services.get("dashboard")
    if port and dashboard is not None and dashboard.port != port:
        await scheduler.close()
        raise LaunchError(port_taken(port, "--dashboard-address"))


def dashboard_endpoint(
    scheduler: Scheduler, args: argparse.Namespace, private: Path
) -> Endpoint | None:
    """Where the scheduler's dashboard is served: the private socket, else
    --dashboard-address's host, with the port it got; None where none is.
    Without bokeh, or with --no-dashboard, the HTTP server still runs (and
    is the "dashboard" service), but serves no dashboard."""
    if not (args.dashboard and has_bokeh()):
        return None
    if args.dashboard_address is None:
        return Endpoint(socket=str(private))
    host = parse_host_port(args.dashboard_address)[0]
    return Endpoint(host=loopback_for(host), port=scheduler.services["dashboard"].port)


def scheduler_info(scheduler: Scheduler, dashboard: Endpoint | None) -> SchedulerInfo:
    return SchedulerInfo(
        address=scheduler.address,
        host=short_hostname(),
        fqdn=socket.getfqdn(),
        dashboard=dashboard,
    )


async def reach(address: str, security: Security) -> str | None:
    """Why this process cannot open a comm to ``address``, as a worker would;
    None when it can."""
    try:
        comm = await connect(
            address, timeout=REACH_TIMEOUT, **security.get_connection_args("worker")
        )
    except (OSError, asyncio.TimeoutError) as e:  # asyncio's is not OSError's before 3.11
        return str(e).splitlines()[0] or type(e).__name__
    await comm.close()
    return None


async def registered_workers(address: str, security: Security) -> dict[str, str] | None:
    """The workers the scheduler has now, name -> address; None if it cannot be asked."""
    try:
        connection_args = security.get_connection_args("client")
        async with rpc(address, timeout=REACH_TIMEOUT, connection_args=connection_args) as s:
            identity = await s.identity()
    except OSError:
        return None
    return {worker["name"]: address for address, worker in identity["workers"].items()}


async def report_failure(address: str, message: str, security: Security) -> None:
    """Post ``message`` in the scheduler's event log, where the driver looks.
    Not an MPI message: one the driver never received would break MPI_Finalize."""
    try:
        connection_args = security.get_connection_args("worker")
        async with rpc(address, timeout=10, connection_args=connection_args) as scheduler:
            await scheduler.log_event(topic=FAILURES_TOPIC, msg=message)
    except OSError:
        logger.warning("could not tell the scheduler: %s", message)


def describe(error: BaseException) -> str:
    """The first cause of a failed start: distributed wraps it ("Nanny failed to
    start") and may raise more while cleaning up."""
    chain: list[BaseException] = []
    cause: BaseException | None = error
    while cause is not None and cause not in chain:
        chain.append(cause)
        cause = cause.__cause__ or cause.__context__
    if any(isinstance(e, TimeoutError) for e in chain):
        return "it did not start in time"
    first = chain[-1]
    return f"{type(first).__name__}: {first}"
