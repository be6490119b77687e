"""The dashboard inside JupyterLab when JupyterLab runs on another node than
the scheduler.

The dashboard listens on the scheduler node's loopback only, and JupyterLab's
proxy reaches only its own node's loopback (and no other host: it stays so).
A relay joins them over the job's TLS: the far end, on the scheduler's rank,
takes connections from the job's certificate holders only and passes them to
the dashboard; the near end, on the driver's rank, listens on the driver
node's loopback, where JupyterLab's proxy looks, and passes each connection
to the far end.  It carries bytes, so the dashboard's WebSockets pass too.
"""
from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import logging
import ssl
from collections.abc import AsyncIterator, Iterator

from distributed import Security
from distributed.comm import get_address_host

from .layout import SCHEDULER_RANK, Layout
from .loop_thread import event_loop_thread
from .places import DEFAULT_DASHBOARD_ADDRESS, join_host_port, parse_host_port
from .servers import SchedulerInfo

logger = logging.getLogger("start_daskmpi")

CHUNK = 64 * 1024
CONNECT_TIMEOUT = 10.0  # seconds for one hop of a relayed connection
START_TIMEOUT = 10.0  # seconds for the near end to listen


async def pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """Copy until either side ends, then close the writer, which ends the
    other direction too (TLS has no half-close)."""
    try:
        while data := await reader.read(CHUNK):
            writer.write(data)
            await writer.drain()
    except (OSError, ssl.SSLError):
        pass
    finally:
        writer.close()
        with contextlib.suppress(OSError, ssl.SSLError):  # gone already: as good
            await writer.wait_closed()


async def relay_to(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter, host: str, port: int,
    ssl_context: ssl.SSLContext | None,
) -> None:
    """Join an accepted connection to ``host:port``; close it if that fails."""
    try:
        far_reader, far_writer = await asyncio.wait_for(
            asyncio.open_connection(host, port, ssl=ssl_context), CONNECT_TIMEOUT
        )
    except (OSError, ssl.SSLError, asyncio.TimeoutError) as e:  # one TimeoutError since 3.11
        logger.warning("dashboard relay: cannot reach %s: %s", join_host_port(host, port), e)
        writer.close()
        return
    await asyncio.gather(pipe(reader, far_writer), pipe(far_reader, writer))


def loopback_for(host: str) -> str:
    """Where to reach a server bound to ``host`` from its own node."""
    return {"": "127.0.0.1", "0.0.0.0": "127.0.0.1", "::": "::1"}.get(host, host)


async def serve_far_end(
    listen_host: str, dashboard_host: str, dashboard_port: int,
    ssl_context: ssl.SSLContext | None,
) -> tuple[asyncio.Server, str]:
    """On the scheduler's rank: listen on ``listen_host`` (the address the
    scheduler advertises) for the near end; with TLS, a client without the
    job's certificate fails the handshake and gets nothing.  Returns the
    server and its address."""
    target = loopback_for(dashboard_host)
    server = await asyncio.start_server(
        lambda r, w: relay_to(r, w, target, dashboard_port, None), listen_host, 0,
        ssl=ssl_context,
    )
    address = join_host_port(listen_host, server.sockets[0].getsockname()[1])
    logger.info("dashboard relay for JupyterLab listening at %s, to the dashboard at %s",
                address, join_host_port(target, dashboard_port))
    return server, address


@contextlib.contextmanager
def near_end(
    port: int, far_end: str, ssl_context: ssl.SSLContext | None
) -> Iterator[None]:
    """On the driver's rank, while JupyterLab runs: 127.0.0.1:``port`` relayed
    to the far end, with the job's client certificate."""
    host, far_port = parse_host_port(far_end)

    async def start() -> asyncio.Server:
        return await asyncio.start_server(
            lambda r, w: relay_to(r, w, host, far_port, ssl_context), "127.0.0.1", port
        )

    async def stop(server: asyncio.Server) -> None:
        """Close it and the connections it relays (this loop runs nothing else)."""
        server.close()
        relaying = asyncio.all_tasks() - {asyncio.current_task()}
        for task in relaying:
            task.cancel()
        await asyncio.gather(*relaying, return_exceptions=True)

    with event_loop_thread("dashboard relay") as run:
        server = run(start(), START_TIMEOUT)
        try:
            yield
        finally:
            run(stop(server), START_TIMEOUT)


@contextlib.asynccontextmanager
async def dashboard_relay(
    args: argparse.Namespace, layout: Layout, info: SchedulerInfo, security: Security
) -> AsyncIterator[SchedulerInfo]:
    """The far end of the dashboard relay, where JupyterLab will run on another
    node than the scheduler; yields ``info`` with the relay's address, if any."""
    apart = layout.roles[layout.driver_rank].host != layout.roles[SCHEDULER_RANK].host
    if not args.jupyterlab or not apart or info.dashboard_port is None:
        yield info
        return
    server, address = await serve_far_end(
        get_address_host(info.address),
        parse_host_port(args.dashboard_address or DEFAULT_DASHBOARD_ADDRESS)[0],
        info.dashboard_port,
        security.get_listen_args("scheduler")["ssl_context"],
    )
    async with server:
        yield dataclasses.replace(info, dashboard_relay=address)
