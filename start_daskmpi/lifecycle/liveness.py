"""Who is still there: at the start, every node reaches the scheduler; at the
end, workers lost with their node; all along, a driver that died.  Each ends
the job with one line and a bound, where waiting on MPI could hang for ever."""
from __future__ import annotations

import asyncio
import logging
import sys
import time
from typing import Any

from distributed import Scheduler, SchedulerPlugin, Security

from start_daskmpi.errors import report
from start_daskmpi.mpi.ending import abort_without_lost_ranks
from start_daskmpi.mpi.world import POLL_INTERVAL, count_everywhere
from start_daskmpi.plan.layout import Layout, Role, format_ranks
from start_daskmpi.plan.network import node_addresses
from start_daskmpi.servers.info import reach, registered_workers

logger = logging.getLogger("start_daskmpi")

# Seconds the scheduler runs on without the driver's client: past the driver's
# own end, which closes its client, then may look for lost workers for a while.
DRIVER_LOST_GRACE = 30.0
LOST_GRACE = 10.0  # seconds a worker gone at the end may take to come back (a restart)


async def everyone_reaches_the_scheduler(
    world: Any, layout: Layout, role: Role, address: str, security: Security
) -> bool:
    """Each node's first rank opens a comm to the scheduler, as its workers
    will: a node that cannot is one line now, naming it, not a startup timeout."""
    error = None
    if role.rank in layout.first_ranks and role.kind != "scheduler":
        error = await reach(address, security)
        if error is not None:
            mine = ", ".join(str(a) for a in node_addresses() if not a.is_loopback) or "none"
            report(
                f"{role.host} (rank {role.rank}) cannot reach the scheduler at {address} "
                f"({error}); its addresses: {mine}: give --interface NAME of a network "
                "every node shares"
            )
    return await count_everywhere(world, int(error is not None)) == 0


class ClientCame(SchedulerPlugin):
    """Whether a client has come to the scheduler: one that came and left
    between two looks at its clients (a driver killed as soon as it had
    connected) came all the same.  Added as the scheduler starts."""

    name = "start_daskmpi-client-came"

    def __init__(self) -> None:
        self.came = False

    def add_client(self, scheduler: Scheduler, client: str) -> None:
        self.came = True


async def driver_gone(scheduler: Scheduler, client_came: ClientCame) -> None:
    """Return once the driver's client, having come, has been gone for
    DRIVER_LOST_GRACE seconds: the driver died, or its node was lost, under a
    launcher that keeps the other ranks running."""
    def clients() -> int:
        # "fire-and-forget" is the scheduler's own pseudo-client (distributed >= 1.21).
        return len(set(scheduler.clients) - {"fire-and-forget"})

    while not client_came.came:
        await asyncio.sleep(POLL_INTERVAL * 10)
    gone_since = None
    while gone_since is None or time.monotonic() - gone_since < DRIVER_LOST_GRACE:
        await asyncio.sleep(POLL_INTERVAL * 10)
        gone_since = None if clients() else (gone_since or time.monotonic())


async def workers_lost(address: str, security: Security, workers: list[Role]) -> list[Role]:
    """The planned workers lost by the end: gone from the scheduler, given
    LOST_GRACE seconds to come back (a nanny restarts a killed worker), or on a
    node that no longer answers (its link cut: the scheduler may not know yet).
    None listed where the scheduler cannot be asked."""
    deadline = time.monotonic() + LOST_GRACE
    while True:
        registered = await registered_workers(address, security)
        if registered is None:
            return []
        gone = [w for w in workers if w.name not in registered]
        if not gone or time.monotonic() > deadline:
            break
        await asyncio.sleep(POLL_INTERVAL * 10)
    # One worker a node stands for it: a node is cut off as a whole.
    probes = {w.host: w for w in workers if w.name in registered}
    answers = await asyncio.gather(
        *(reach(registered[w.name], security) for w in probes.values())
    )
    silent = {host for host, error in zip(probes, answers, strict=True) if error}
    return gone + [w for w in workers if w.host in silent and w not in gone]


def end_at_once_if_workers_were_lost(
    world: Any, workers: list[Role], address: str, security: Security, code: int
) -> None:
    """Of ``workers`` (those that registered), the ones that left the cluster
    for good by the end (their node lost, its link cut): MPI may never reach
    their ranks again, and a message to them can hang, or crash the MPI
    library.  Name them, and end the job now with the script's status."""
    lost = asyncio.run(workers_lost(address, security, workers))
    logger.info("at the end, workers lost: %s", [role.name for role in lost])
    if lost:
        hosts = ", ".join(dict.fromkeys(role.host for role in lost))
        report(
            f"rank(s) {format_ranks(r.rank for r in lost)} on {hosts}: their workers left "
            "the cluster and did not come back (a node lost, or its network cut); the job "
            "ends without them"
        )
        sys.stdout.flush()
        abort_without_lost_ranks(world, code)
