"""The driver's rank, the same in every mode (the command, initialize(), the
local cluster): its start (the servers it runs beside itself, the scheduler
reached, the client connected, enough workers registered), then the
caller's work (the script, JupyterLab, or the rest of the user's script
under initialize()), then its end (the client closed, every rank told the
job's status, the servers beside it stopped, its private folder gone)."""
from __future__ import annotations

import asyncio
import contextlib
import signal
import threading
from collections.abc import Iterator
from typing import Any

from start_daskmpi.driver.job import Job, connected
from start_daskmpi.driver.script import (
    announce_interrupt,
    raise_hung_up,
    raise_interrupted,
    raise_terminated,
)
from start_daskmpi.lifecycle.cluster import Cluster
from start_daskmpi.lifecycle.ending import tell_every_rank_the_end
from start_daskmpi.lifecycle.liveness import everyone_reaches_the_scheduler
from start_daskmpi.lifecycle.roles import Beside, serve_beside_the_driver
from start_daskmpi.mpi.ending import hard_exit_ends_the_job
from start_daskmpi.mpi.world import LEAVE_TIMEOUT, TAG_START, alone, receive
from start_daskmpi.plan.layout import SCHEDULER_RANK
from start_daskmpi.security.private import remove_private
from start_daskmpi.servers.info import SchedulerInfo
from start_daskmpi.servers.workers import WORKERS_LEAVE_TIMEOUT

# What ends the driver's work early, raised in its main thread: Ctrl-C, SIGTERM
# (a walltime, a kill) and SIGHUP (its terminal closed), as a shell's job ends.
INTERRUPTS = {signal.SIGINT: raise_interrupted, signal.SIGTERM: raise_terminated,
              signal.SIGHUP: raise_hung_up}


@contextlib.contextmanager
def interrupts_raised() -> Iterator[None]:
    previous = {signum: signal.signal(signum, handler) for signum, handler in INTERRUPTS.items()}
    try:
        yield
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)


def scheduler_reached(world: Any, cluster: Cluster, beside: Beside) -> SchedulerInfo | None:
    """The scheduler's address, once every node reached it; None where it
    failed to start or a node cannot reach it (said by rank 0).  Where the
    scheduler serves beside this driver, its own thread says."""
    print("Starting the scheduler", flush=True)
    if cluster.network_note:
        print(cluster.network_note, flush=True)
    if cluster.rank == SCHEDULER_RANK:
        return beside.info.result()  # set by serve_scheduler, whose ends are bounded
    info, error = asyncio.run(receive(world, SCHEDULER_RANK, TAG_START))
    if error is None:
        reached = everyone_reaches_the_scheduler(world, cluster.layout, cluster.role,
                                                 info.address, cluster.security)
        info = info if asyncio.run(reached) else None
    beside.reached(info)
    return info


class DriverRank:
    """The driver's rank: ``start`` it, do the work, ``end`` it with the work's status."""

    def __init__(self, world: Any, cluster: Cluster) -> None:
        self.world, self.cluster = world, cluster
        self.stack = contextlib.ExitStack()
        self.beside = Beside()
        self.servers: threading.Thread | None = None
        self.job: Job | None = None
        self.code: int | None = None  # the job's status, once ended

    def start(self) -> tuple[Any, list[str]] | None:
        """The driver's client and the SSH route to the scheduler's node, once
        enough workers registered; None where the job could not start (rank 0
        said why).  Raises LaunchError (the job cannot start: one line to say)
        or KeyboardInterrupt (an interrupt came first)."""
        cluster = self.cluster
        self.stack.enter_context(interrupts_raised())
        if cluster.role.kind == "scheduler" or cluster.layout.beside_rank(cluster.rank):
            self.servers = serve_beside_the_driver(self.world, cluster, self.beside)
        info = scheduler_reached(self.world, cluster, self.beside)
        if info is None:
            return None
        self.job = Job(cluster.config, info, cluster.layout, cluster.log_dir,
                       cluster.credentials, cluster.private)
        if not alone(self.world):  # alone, os._exit ends the one process, as python's does
            self.stack.enter_context(hard_exit_ends_the_job(
                self.world, cluster.hosts, self.at_a_hard_exit, cluster.layout.driver_rank))
        return self.stack.enter_context(connected(self.job))

    def at_a_hard_exit(self, code: int) -> None:
        """The script's os._exit(code): what end() would leave behind, left."""
        assert self.job is not None
        self.job.record_and_clean_up(code)
        remove_private(self.cluster.private)

    def end(self, code: int) -> int:
        """End the job with ``code``, once: the client closed, every rank told,
        the servers beside stopped.  Returns the job's status (an interrupt
        while the client closed makes it its own)."""
        if self.code is not None:
            return self.code
        try:
            self.stack.close()
        except KeyboardInterrupt as e:  # the scheduler was lost meanwhile
            code = announce_interrupt(e)
        self.code = code
        if self.job is not None:
            print("Successfully exited" if code == 0 else f"Exited with status {code}",
                  flush=True)
            self.job.record_and_clean_up(code)
            tell_every_rank_the_end(self.world, self.job, code)
        self.beside.ended(code)
        if self.servers is not None:  # the scheduler's, beside, waits for the workers first
            self.servers.join(WORKERS_LEAVE_TIMEOUT + LEAVE_TIMEOUT)
        remove_private(self.cluster.private)
        return code
