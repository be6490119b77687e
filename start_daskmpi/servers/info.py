"""What the ranks know of the servers and ask of them: the scheduler's
address and dashboard (SchedulerInfo), how each server talks (protocol,
interface), whether a rank reaches the scheduler, which workers it has,
a failure reported in its event log."""
from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from typing import Any

from distributed import Security
from distributed.comm import connect
from distributed.core import rpc

from start_daskmpi.plan.config import Config
from start_daskmpi.plan.ports import Endpoint

logger = logging.getLogger("start_daskmpi")

FAILURES_TOPIC = "start_daskmpi-failures"  # scheduler event topic for workers that failed to start
REACH_TIMEOUT = 5.0  # seconds a node's first rank tries to reach the scheduler at start


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


def comm_protocol(config: Config) -> str | None:
    return "tls" if config.network.tls else config.network.protocol


def bound_to(interface: str | None) -> dict[str, Any]:
    """Where a server listens: its interface's address, else loopback; never
    every address, which would show it to every network the node is on."""
    return dict(interface=interface) if interface else dict(host="127.0.0.1")


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
    if any(isinstance(e, (TimeoutError, asyncio.TimeoutError)) for e in chain):  # two before 3.11
        return "it did not start in time"
    first = chain[-1]
    return f"{type(first).__name__}: {first}"
