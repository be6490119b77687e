"""The scheduler, as under mpirun and in a local cluster: its port, its
scratch in the process's private folder, its dashboard on a private
socket (or --dashboard-address), what its rank imports before it starts."""
from __future__ import annotations

import errno
import importlib.util
import socket
import warnings
from pathlib import Path
from typing import Any

import dask
from distributed import Scheduler, Security
from tornado.httpserver import HTTPServer
from tornado.netutil import bind_unix_socket

from start_daskmpi.errors import LaunchError
from start_daskmpi.plan.config import Config
from start_daskmpi.plan.network import listen_host
from start_daskmpi.plan.node import short_hostname
from start_daskmpi.plan.ports import (
    DEFAULT_SCHEDULER_PORT,
    Endpoint,
    choose_port,
    dashboard_address,
    loopback_for,
    parse_host_port,
    port_is_free,
    port_taken,
)
from start_daskmpi.servers.info import SchedulerInfo, bound_to, comm_protocol
from start_daskmpi.servers.pre_imports import import_each, modules_for
from start_daskmpi.servers.unmet_resources import UnmetResources

PORT_RACE_ATTEMPTS = 5  # starts of the scheduler on the next free port, when another took it
DASHBOARD_SOCKET = "dashboard.sock"  # in the scheduler's private folder


def scheduler_options(
    config: Config, security: Security, folder: Path, interface: str | None
) -> dict[str, Any]:
    """``folder``: the process's private folder, for the scheduler's scratch,
    which distributed puts first on sys.path (a shared /tmp/dask-scratch-space
    would let another user put modules there); ``interface``: the one its
    node's servers use (None: loopback)."""
    host = listen_host(interface)
    port = choose_port(
        config.network.scheduler_port, DEFAULT_SCHEDULER_PORT,
        lambda p: port_is_free(host, p), "--scheduler-port",
    )
    return dict(
        **bound_to(interface),
        port=port,
        protocol=comm_protocol(config),
        security=security,
        local_directory=str(folder),
        dashboard=config.network.dashboard,
        # Without --dashboard-address, the dashboard moves to a socket before
        # the scheduler starts (serve_dashboard_privately): any port until then.
        dashboard_address=dashboard_address(
            config.network.dashboard_address, lambda h, p: p != port and port_is_free(h, p)
        ) if config.network.dashboard_address else "127.0.0.1:0",
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
    config: Config, security: Security, folder: Path, interface: str | None
) -> tuple[Scheduler, Endpoint | None]:
    """The scheduler on the port chosen for it, and where its dashboard is
    (None: none is served); its scratch and dashboard socket in ``folder``,
    the process's private folder; on ``interface``.  Another launcher
    starting on this node at the same moment may bind a default port between
    our choice and our bind: then the next free port."""
    # The dashboard's port lost that way, distributed takes any free one and warns
    # in several lines ("Perhaps you already have a cluster running?"): the banner
    # prints the port it got, and a requested one is checked below instead.
    warnings.filterwarnings("ignore", r"Port \d+ is already in use", UserWarning)
    # Each graph is unpickled here: the modules its tasks name, imported now
    # (done already where the rank imported them before MPI started).
    import_each(modules_for(config.workers.pre_import, gpu_worker=False, has_cupy=False))
    for _ in range(PORT_RACE_ATTEMPTS):
        options = scheduler_options(config, security, folder, interface)
        try:
            with dask.config.set({"distributed.scheduler.http.routes": dashboard_routes()}):
                scheduler = Scheduler(**options)
            if config.network.dashboard_address is None:
                serve_dashboard_privately(scheduler, folder / DASHBOARD_SOCKET)
            await scheduler
        except Exception as e:
            cause = e.__cause__ or e
            raced = getattr(cause, "errno", None) == errno.EADDRINUSE
            if not raced or config.network.scheduler_port is not None:
                raise LaunchError(f"the scheduler failed to start: {cause}") from None
            continue
        await refuse_another_dashboard_port(scheduler, config.network.dashboard_address)
        scheduler.add_plugin(UnmetResources(scheduler))
        return scheduler, dashboard_endpoint(scheduler, config, folder / DASHBOARD_SOCKET)
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
    scheduler: Scheduler, config: Config, private: Path
) -> Endpoint | None:
    """Where the scheduler's dashboard is served: the private socket, else
    --dashboard-address's host, with the port it got; None where none is.
    Without bokeh, or with --no-dashboard, the HTTP server still runs (and
    is the "dashboard" service), but serves no dashboard."""
    if not (config.network.dashboard and has_bokeh()):
        return None
    if config.network.dashboard_address is None:
        return Endpoint(socket=str(private))
    host = parse_host_port(config.network.dashboard_address)[0]
    return Endpoint(host=loopback_for(host), port=scheduler.services["dashboard"].port)


def scheduler_info(scheduler: Scheduler, dashboard: Endpoint | None) -> SchedulerInfo:
    return SchedulerInfo(
        address=scheduler.address,
        host=short_hostname(),
        fqdn=socket.getfqdn(),
        dashboard=dashboard,
    )
