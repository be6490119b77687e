"""What each rank serves until the job ends, by its role: the scheduler, a
worker, nothing (an idle rank); and the servers a process runs beside its
own role (Beside: dask-mpi's execute() may place them so, and the local
cluster runs all of them in one process).

Ranks talk over MPI only at the start (the scheduler's address, whether
every node reaches it) and at the end (the driver's word: the job's status).
"""
from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import logging
import threading
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field, replace
from typing import Any

from distributed import Scheduler

from start_daskmpi.driver.dashboard_relay import dashboard_relay
from start_daskmpi.driver.jupyterlab import CONTROL_TOPIC
from start_daskmpi.driver.terminal import this_jobs_terminal, watch
from start_daskmpi.errors import MISTAKE, LaunchError, report
from start_daskmpi.lifecycle.cluster import Cluster
from start_daskmpi.lifecycle.liveness import ClientCame, driver_gone, everyone_reaches_the_scheduler
from start_daskmpi.mpi.world import (
    LEAVE_TIMEOUT,
    QUICK_POLL,
    TAG_START,
    RankLost,
    alone,
    drivers_word,
    receive,
    send_to_all,
)
from start_daskmpi.plan.layout import SCHEDULER_RANK, Layout, Role
from start_daskmpi.security.private import private_scratch
from start_daskmpi.servers.info import SchedulerInfo, describe, report_failure
from start_daskmpi.servers.scheduler import scheduler_info, start_scheduler
from start_daskmpi.servers.workers import WORKERS_LEAVE_TIMEOUT, make_worker, stop_worker

logger = logging.getLogger("start_daskmpi")


@dataclass
class Beside:
    """What a process's own role hands the servers it runs beside it: the
    scheduler's address once every node reached it (None: the job does not
    start), and the job's end, its status."""

    info: concurrent.futures.Future = field(default_factory=concurrent.futures.Future)
    end: concurrent.futures.Future = field(default_factory=concurrent.futures.Future)

    def ended(self, code: int) -> None:
        if not self.end.done():
            self.end.set_result(code)

    def reached(self, info: SchedulerInfo | None) -> None:
        if not self.info.done():
            self.info.set_result(info)


async def unless_ended(end: asyncio.Future, work: Awaitable[Any]) -> bool:
    """Await ``work`` unless the job ends first; True if it finished.  The job
    can end while a worker still starts (another one failed)."""
    task = asyncio.ensure_future(work)
    await asyncio.wait([end, task], return_when=asyncio.FIRST_COMPLETED)
    if task.done():
        task.result()  # raise what it raised
        return True
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
    return False


async def bounded(end: asyncio.Future, timeout: float, default: int) -> int:
    """``end``'s status, or ``default`` after ``timeout`` seconds."""
    try:
        return await asyncio.wait_for(end, timeout)
    except (TimeoutError, asyncio.TimeoutError):  # one and the same since Python 3.11
        return default


# --- the scheduler ----------------------------------------------------------------

async def workers_gone(scheduler: Scheduler, timeout: float) -> None:
    """Wait for the workers, told by their ranks to close, to say goodbye: a
    scheduler that closes first cuts their streams mid-goodbye."""
    deadline = asyncio.get_running_loop().time() + timeout
    while scheduler.workers and asyncio.get_running_loop().time() < deadline:
        await asyncio.sleep(QUICK_POLL)


def close_joined_workers(scheduler: Scheduler, layout: Layout) -> None:
    """Ask the workers of jobs that joined this one (--join) to leave: no rank
    of this job tells them the job is over."""
    ours = {role.name for role in layout.workers}
    for worker in list(scheduler.workers.values()):
        if worker.name not in ours:
            scheduler.close_worker(worker.address)


async def serve_scheduler(world: Any, cluster: Cluster, beside: Beside) -> int:
    """The scheduler (and the workers beside it) until the job ends; its relay
    of the dashboard where JupyterLab runs on another node; the terminal's
    'stop', which mpirun forwards to this rank alone."""
    try:
        scheduler, dashboard = await start_scheduler(cluster.config, cluster.security,
                                                     cluster.private, cluster.interface)
    except LaunchError as e:
        report(str(e))
        send_to_all(world, (None, str(e)), TAG_START)
        beside.reached(None)
        return MISTAKE
    client_came = ClientCame()
    scheduler.add_plugin(client_came)
    async with scheduler, dashboard_relay(cluster.config, cluster.layout,
                                          scheduler_info(scheduler, dashboard),
                                          cluster.security) as info:
        jupyterlab = cluster.config.run.jupyterlab
        terminal = this_jobs_terminal(under_a_launcher=not alone(world)) if jupyterlab else None
        if terminal:
            info = replace(info, unheard=terminal.unheard())
        send_to_all(world, (info, None), TAG_START)
        if not await everyone_reaches_the_scheduler(world, cluster.layout, cluster.role, "",
                                                    cluster.security):
            beside.reached(None)
            return MISTAKE
        beside.reached(info)
        if terminal:
            loop = asyncio.get_running_loop()
            watch(terminal,
                  lambda word: loop.call_soon_threadsafe(scheduler.log_event, CONTROL_TOPIC, word))
        return await until_the_end(world, cluster, scheduler, client_came, beside)


async def until_the_end(world: Any, cluster: Cluster, scheduler: Scheduler,
                        client_came: ClientCame, beside: Beside) -> int:
    """The job's status, once the driver has said it (or the scheduler closed
    first, a client's shutdown), the workers gone first."""
    workers = asyncio.ensure_future(work_beside(cluster, beside))
    layout = cluster.layout
    driver_beside = layout.driver_rank == cluster.rank
    end = asyncio.ensure_future(asyncio.wrap_future(beside.end) if driver_beside
                                else drivers_word(world, layout.driver_rank))
    # A driver beside is this process: it cannot be lost alone.
    lost = asyncio.ensure_future(asyncio.Event().wait() if driver_beside
                                 else driver_gone(scheduler, client_came))
    finished = asyncio.ensure_future(scheduler.finished())
    await unless_ended(end, asyncio.wait([finished, lost], return_when="FIRST_COMPLETED"))
    if end.done():
        end.result()  # raises RankLost where the driver died under a fault-tolerant MPI
    elif lost.done():  # its client gone, under a launcher that keeps the other ranks
        raise RankLost(layout.driver_rank)
    for watcher in (lost, finished):
        watcher.cancel()
    if end.done():  # else the scheduler closed first
        beside.ended(end.result())
    close_joined_workers(scheduler, layout)
    await workers_gone(scheduler, WORKERS_LEAVE_TIMEOUT)
    code = await end
    beside.ended(code)
    await workers
    return code


# --- workers ------------------------------------------------------------------------

async def scheduler_address(world: Any, cluster: Cluster) -> str | None:
    """The scheduler's address, once every node reached it; None where it
    failed to start or a node cannot reach it (said by rank 0)."""
    info, error = await receive(world, SCHEDULER_RANK, TAG_START)
    if error is not None:
        return None
    reached = await everyone_reaches_the_scheduler(world, cluster.layout, cluster.role,
                                                   info.address, cluster.security)
    return info.address if reached else None


async def serve_worker(world: Any, cluster: Cluster) -> int:
    address = await scheduler_address(world, cluster)
    if address is None:
        return MISTAKE
    end = asyncio.ensure_future(drivers_word(world, cluster.layout.driver_rank))
    return await work_until(end, address, cluster, cluster.role, telling_the_driver(address,
                                                                                   cluster))


# Says that a worker failed to start, and why; the rank's status then, or None.
Failed = Callable[[Role, str], Awaitable[int | None]]


def telling_the_driver(address: str, cluster: Cluster) -> Failed:
    """A failed worker said in the scheduler's event log, where the driver,
    waiting for it, looks: it names it and ends the job.  Not an MPI message:
    one the driver never received would break MPI_Finalize."""
    async def tell(role: Role, why: str) -> None:
        message = f"worker {role.name} (rank {role.rank}) failed: {why}"
        await report_failure(address, message, cluster.security)

    return tell


async def work_until(
    end: asyncio.Future, address: str, cluster: Cluster, role: Role, failed: Failed
) -> int:
    """Serve ``role``'s worker until ``end`` (the job's status) comes; where
    it fails to start, ``failed(role, why)`` says so, and gives the status (None:
    wait for ``end`` all the same)."""
    code = None
    with private_scratch(cluster.scratch) as scratch:
        server = make_worker(address, role, cluster.config, cluster.security,
                             cluster.worker_log(role), scratch, cluster.interface)
        try:
            if await unless_ended(end, server):  # each kind of server starts when awaited
                if await unless_ended(end, server.finished()):
                    # It closed by itself (its scheduler gone): the driver's word may
                    # never come either, where this node was cut off.
                    return await bounded(end, LEAVE_TIMEOUT, default=1)
        except Exception as e:
            logger.info("worker %s failed", role.name, exc_info=True)  # distributed said why
            code = await failed(role, describe(e))
        finally:
            await stop_worker(server)
    return code if code is not None else await end


async def work_beside(cluster: Cluster, beside: Beside) -> None:
    """The workers that run in this rank's process beside its own role, once
    the scheduler is reached, until the job ends."""
    workers = cluster.layout.beside_rank(cluster.rank)
    if not workers:
        return
    info = await asyncio.wrap_future(beside.info)
    if info is None:
        return
    end = asyncio.ensure_future(asyncio.wrap_future(beside.end))
    tell = telling_the_driver(info.address, cluster)
    await asyncio.gather(*(work_until(end, info.address, cluster, role, tell)
                           for role in workers))


def serve_beside_the_driver(world: Any, cluster: Cluster, beside: Beside) -> threading.Thread:
    """Start, on a thread of their own, the servers this process runs beside
    its driver, which keeps the main thread (the user's code, its signals):
    the scheduler (with its workers beside) where the driver shares its rank,
    else the driver's own workers beside.  They end with ``beside.end``."""
    def serve() -> None:
        try:
            if cluster.role.kind == "scheduler":
                asyncio.run(serve_scheduler(world, cluster, beside))
            else:
                asyncio.run(work_beside(cluster, beside))
        finally:
            beside.reached(None)  # the driver must not wait for a scheduler that failed

    thread = threading.Thread(target=serve, name="servers beside the driver", daemon=True)
    thread.start()
    return thread


async def stay_idle(world: Any, cluster: Cluster) -> int:
    if await scheduler_address(world, cluster) is None:
        return MISTAKE
    return await drivers_word(world, cluster.layout.driver_rank)


def serve_role(world: Any, cluster: Cluster) -> int:
    """This rank's server, the scheduler, a worker or none, until the job ends."""
    kind = cluster.role.kind
    if kind == "scheduler":
        return asyncio.run(serve_scheduler(world, cluster, Beside()))
    return asyncio.run(serve_worker(world, cluster) if kind == "worker"
                       else stay_idle(world, cluster))
