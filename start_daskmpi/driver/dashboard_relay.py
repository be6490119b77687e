"""The dashboard inside JupyterLab when JupyterLab runs on another node than
the scheduler.

The dashboard is served on the scheduler node's private socket (or where
--dashboard-address says), and JupyterLab's proxy reaches only its own node.
A relay joins them over the job's TLS: the far end, on the scheduler's rank,
takes connections from the job's certificate holders only and passes them to
the dashboard; the near end, on the driver's rank, listens on a Unix socket
in the driver's private folder, where JupyterLab's proxy looks, and passes
each connection to the far end.  It carries bytes, so the dashboard's
WebSockets pass too.
"""
from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import ssl
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

from distributed import Security
from distributed.comm import get_address_host

from start_daskmpi.driver.loop_thread import event_loop_thread
from start_daskmpi.plan.config import Config
from start_daskmpi.plan.layout import SCHEDULER_RANK, Layout
from start_daskmpi.plan.ports import Endpoint, join_host_port, parse_host_port
from start_daskmpi.servers.info import SchedulerInfo

logger = logging.getLogger("start_daskmpi")

CHUNK = 64 * 1024
# What a TLS side of the relay may buffer before it pauses reading.  Python
# 3.10's TLS transport drops the chunk being read when a paused reader resumes
# after its peer closed (sslproto: its transport already None), which cut a
# dashboard script short under load; a buffer larger than a dashboard page and
# its scripts keeps the reader from pausing.  Bounded, a few connections a job.
TLS_READ_LIMIT = 16 * 1024 * 1024
CONNECT_TIMEOUT = 10.0  # seconds for one hop of a relayed connection
START_TIMEOUT = 10.0  # seconds for the near end to listen
NEAR_END_SOCKET = "dashboard-relay.sock"  # in the driver's private folder


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


async def open_connection(
    endpoint: Endpoint, ssl_context: ssl.SSLContext | None
) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    if endpoint.socket:
        return await asyncio.open_unix_connection(endpoint.socket)
    return await asyncio.open_connection(endpoint.host, endpoint.port, ssl=ssl_context,
                                         limit=TLS_READ_LIMIT)


async def relay_to(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter, endpoint: Endpoint,
    ssl_context: ssl.SSLContext | None,
) -> None:
    """Join an accepted connection to ``endpoint``; close it if that fails."""
    try:
        far_reader, far_writer = await asyncio.wait_for(
            open_connection(endpoint, ssl_context), CONNECT_TIMEOUT
        )
    except (OSError, ssl.SSLError, asyncio.TimeoutError) as e:  # one TimeoutError since 3.11
        logger.warning("dashboard relay: cannot reach %s: %s", endpoint.target, e)
        writer.close()
        return
    await asyncio.gather(pipe(reader, far_writer), pipe(far_reader, writer))


async def serve_far_end(
    listen_host: str, dashboard: Endpoint, ssl_context: ssl.SSLContext | None,
) -> tuple[asyncio.Server, str]:
    """On the scheduler's rank: listen on ``listen_host`` (the address the
    scheduler advertises) for the near end; with TLS, a client without the
    job's certificate fails the handshake and gets nothing.  Returns the
    server and its address."""
    server = await asyncio.start_server(
        lambda r, w: relay_to(r, w, dashboard, None), listen_host, 0, ssl=ssl_context,
        limit=TLS_READ_LIMIT,
    )
    address = join_host_port(listen_host, server.sockets[0].getsockname()[1])
    logger.info("dashboard relay for JupyterLab listening at %s, to the dashboard at %s",
                address, dashboard.target)
    return server, address


@contextlib.contextmanager
def near_end(
    folder: Path, far_end: str, ssl_context: ssl.SSLContext | None
) -> Iterator[Endpoint]:
    """On the driver's rank, while JupyterLab runs: a socket in ``folder`` (the
    driver's private one) relayed to the far end, with the job's client
    certificate; yields where it listens."""
    host, far_port = parse_host_port(far_end)
    far = Endpoint(host=host, port=far_port)
    path = folder / NEAR_END_SOCKET

    async def start() -> asyncio.Server:
        return await asyncio.start_unix_server(
            lambda r, w: relay_to(r, w, far, ssl_context), str(path)
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
            yield Endpoint(socket=str(path))
        finally:
            run(stop(server), START_TIMEOUT)


@contextlib.asynccontextmanager
async def dashboard_relay(
    config: Config, layout: Layout, info: SchedulerInfo, security: Security
) -> AsyncIterator[SchedulerInfo]:
    """The far end of the dashboard relay, where JupyterLab will run on another
    node than the scheduler; yields ``info`` with the relay's address, if any."""
    apart = layout.roles[layout.driver_rank].host != layout.roles[SCHEDULER_RANK].host
    if not config.run.jupyterlab or not apart or info.dashboard is None:
        yield info
        return
    server, address = await serve_far_end(
        get_address_host(info.address), info.dashboard,
        security.get_listen_args("scheduler")["ssl_context"],
    )
    async with server:
        yield dataclasses.replace(info, dashboard_relay=address)
