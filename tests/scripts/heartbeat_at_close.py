"""A worker preload that holds one of its worker's heartbeats (as a metric
that takes its time) until the worker begins to close, then until the close
has shut its connections, or 0.3 s: the timing, seen under load, in which
distributed's heartbeat meets the connections the close shuts, and logs an
ERROR after a clean run."""
import asyncio
import logging

from distributed.core import Status

CLOSING = (Status.closing, Status.closing_gracefully, Status.closed)
logger = logging.getLogger("heartbeat_at_close")


async def held_until_the_close(worker):
    if worker.status != Status.running:  # registering: it asks for the metrics too
        return 0
    # The launcher's worker marks its close begun before distributed's status does.
    while worker.status not in CLOSING and not getattr(worker, "closing_soon", False):
        await asyncio.sleep(0.02)
    for _ in range(30):
        if worker.rpc.status == Status.closed:
            break
        await asyncio.sleep(0.01)
    logger.info("the held heartbeat goes on")
    return 0


def dask_setup(worker):
    worker.metrics["held_until_the_close"] = held_until_the_close
