"""One function per role under mpirun: the scheduler, the driver, a worker, an
idle rank; and run_rank, which agrees on the layout and gives this rank its own.

Ranks talk over MPI only at the start (the layout, the certificates, the
scheduler's address) and at the end (the driver's exit status).  Servers that
share a process with another role (dask-mpi's execute() may place them so)
hear both from that role, in the process (Beside).
"""
from __future__ import annotations

import argparse
import asyncio
import concurrent.futures
import contextlib
import logging
import os
import sys
import threading
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, NoReturn

from distributed import Scheduler, Security
from distributed.system import MEMORY_LIMIT

from .checks import preflight
from .dashboard_relay import dashboard_relay
from .driver import Job, drive_until_interrupted
from .errors import LaunchError, attempt, report
from .gpus import own_masks
from .jupyterlab_mode import CONTROL_TOPIC
from .layout import (
    DRIVER_RANK,
    SCHEDULER_RANK,
    Layout,
    Node,
    Role,
    describe_layout,
    plan_layout,
    with_rank_masks,
    world_too_small,
)
from .liveness import (
    ClientCame,
    driver_gone,
    end_at_once_if_workers_were_lost,
    everyone_reaches_the_scheduler,
)
from .logs import log_to_file
from .mpi import (
    LEAVE_GRACE,
    LEAVE_TIMEOUT,
    QUICK_POLL,
    TAG_END,
    TAG_START,
    RankLost,
    abort_job,
    agree,
    exit_together,
    gather_nodes,
    hard_exit_ends_the_job,
    job_end,
    leave_without_teardown,
    receive,
    send_to_all,
)
from .network import interfaces_for
from .node import this_node
from .places import make_log_dir, private_dir, private_scratch
from .security import (
    Credentials,
    certify_ranks,
    new_key,
    private_folder,
    remove_private,
    runtime_folder,
    security_from,
)
from .servers import (
    WORKERS_LEAVE_TIMEOUT,
    SchedulerInfo,
    describe,
    make_worker,
    report_failure,
    scheduler_info,
    start_scheduler,
    stop_worker,
)
from .terminal import this_jobs_terminal, watch

logger = logging.getLogger("start_daskmpi")


@dataclass(frozen=True)
class Cluster:
    """What every rank agreed on before any server starts."""

    layout: Layout
    args: argparse.Namespace  # this rank's: its node's interface and scratch
    log_dir: Path
    credentials: Credentials | None  # this rank's own
    security: Security
    worker_log: Path  # where this rank's worker process, if any, logs
    network_note: str | None  # how the interface was chosen, for the driver to say
    private: Path  # this rank's private folder on its node: its servers' scratch and sockets


@dataclass
class Beside:
    """What a process's own role hands the servers it runs beside it (a Shape
    of dask-mpi's execute()): the scheduler's address once every node reached
    it (None: the job does not start), and the job's end, its status."""

    info: concurrent.futures.Future = field(default_factory=concurrent.futures.Future)
    end: concurrent.futures.Future = field(default_factory=concurrent.futures.Future)

    def ended(self, code: int) -> None:
        if not self.end.done():
            self.end.set_result(code)

    def reached(self, info: SchedulerInfo | None) -> None:
        if not self.info.done():
            self.info.set_result(info)


async def unless_ended(end: asyncio.Future, work: Awaitable[Any]) -> bool:
    """Await ``work`` unless the driver ends the job first; True if it finished.
    The job can end while a worker still starts (another one failed)."""
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
    args, layout, security = cluster.args, cluster.layout, cluster.security
    try:
        scheduler, dashboard = await start_scheduler(args, security, len(layout.workers),
                                                     cluster.private)
    except LaunchError as e:
        report(str(e))
        send_to_all(world, (None, str(e)), TAG_START)
        beside.reached(None)
        return 2
    client_came = ClientCame()
    scheduler.add_plugin(client_came)
    async with scheduler, dashboard_relay(args, layout, scheduler_info(scheduler, dashboard),
                                          security) as info:
        terminal = this_jobs_terminal(under_a_launcher=True) if args.jupyterlab else None
        if terminal:  # mpirun forwards the terminal to this rank alone
            info = replace(info, unheard=terminal.unheard())
        send_to_all(world, (info, None), TAG_START)
        role = layout.roles[SCHEDULER_RANK]
        if not await everyone_reaches_the_scheduler(world, layout, role, "", security):
            beside.reached(None)
            return 2
        beside.reached(info)
        workers = asyncio.ensure_future(work_beside(cluster, world.rank, beside))
        driver_beside = layout.driver_rank == SCHEDULER_RANK
        end = asyncio.ensure_future(
            asyncio.wrap_future(beside.end) if driver_beside else job_end(world, layout.driver_rank)
        )
        if terminal:
            loop = asyncio.get_running_loop()
            watch(terminal,
                  lambda word: loop.call_soon_threadsafe(scheduler.log_event, CONTROL_TOPIC, word))
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
        if end.done():  # else the scheduler closed first (a client's shutdown)
            beside.ended(end.result())
        close_joined_workers(scheduler, layout)
        await workers_gone(scheduler, WORKERS_LEAVE_TIMEOUT)
        code = await end
        beside.ended(code)
        await workers
    return code


async def serve_worker(world: Any, cluster: Cluster, role: Role) -> int:
    layout, security = cluster.layout, cluster.security
    info, error = await receive(world, SCHEDULER_RANK, TAG_START)
    if error is not None:
        return 2
    if not await everyone_reaches_the_scheduler(world, layout, role, info.address, security):
        return 2
    end = asyncio.ensure_future(job_end(world, layout.driver_rank))
    return await work_until(end, info.address, cluster, role)


async def work_until(end: asyncio.Future, address: str, cluster: Cluster, role: Role) -> int:
    """Serve ``role``'s worker until ``end`` (the job's status) comes."""
    args, security = cluster.args, cluster.security
    with private_scratch(args.local_directory) as scratch:
        server = make_worker(address, role, args, security, cluster.worker_log, scratch)
        try:
            if await unless_ended(end, server):  # each kind of server starts when awaited
                if await unless_ended(end, server.finished()):
                    # It closed by itself (its scheduler gone): the driver's word may
                    # never come either, where this node was cut off.
                    return await bounded(end, LEAVE_TIMEOUT, default=1)
        except Exception as e:
            # Distributed has logged why; tell the driver, which is waiting for this worker.
            logger.info("worker %s failed", role.name, exc_info=True)
            await report_failure(
                address,
                f"worker {role.name} (rank {role.rank}) failed: {describe(e)}",
                security,
            )
        finally:
            await stop_worker(server)
    return await end


async def work_beside(cluster: Cluster, rank: int, beside: Beside) -> None:
    """The workers that run in this rank's process beside its own role, once
    the scheduler is reached, until the job ends."""
    workers = cluster.layout.beside_rank(rank)
    if not workers:
        return
    info = await asyncio.wrap_future(beside.info)
    if info is None:
        return
    end = asyncio.ensure_future(asyncio.wrap_future(beside.end))
    await asyncio.gather(*(work_until(end, info.address, cluster, role) for role in workers))


def serve_beside_driver(world: Any, cluster: Cluster, beside: Beside) -> threading.Thread:
    """Start, on a thread of their own, the servers this process runs beside
    its driver, which keeps the main thread (the user's code, its signals):
    the scheduler (with its workers beside) where the driver shares its rank,
    else the driver's own workers beside.  They end with ``beside.end``."""
    def serve() -> None:
        try:
            if cluster.layout.roles[world.rank].kind == "scheduler":
                asyncio.run(serve_scheduler(world, cluster, beside))
            else:
                asyncio.run(work_beside(cluster, world.rank, beside))
        finally:
            beside.reached(None)  # the driver must not wait for a scheduler that failed

    thread = threading.Thread(target=serve, name="servers beside the driver", daemon=True)
    thread.start()
    return thread


async def stay_idle(world: Any, layout: Layout, role: Role, security: Security) -> int:
    info, error = await receive(world, SCHEDULER_RANK, TAG_START)
    if error is not None:
        return 2
    if not await everyone_reaches_the_scheduler(world, layout, role, info.address, security):
        return 2
    return await job_end(world, layout.driver_rank)


def scheduler_reached(world: Any, cluster: Cluster, beside: Beside) -> SchedulerInfo | None:
    """The scheduler's address, once every node reached it; None where it
    failed to start or a node cannot reach it (said by rank 0).  Where the
    scheduler serves beside this driver, its own thread says."""
    print("Starting the scheduler", flush=True)
    if cluster.network_note:
        print(cluster.network_note, flush=True)
    if world.rank == SCHEDULER_RANK:
        return beside.info.result()  # set by serve_scheduler, whose ends are bounded
    info, error = asyncio.run(receive(world, SCHEDULER_RANK, TAG_START))
    if error is None:
        role = cluster.layout.roles[world.rank]
        reached = everyone_reaches_the_scheduler(
            world, cluster.layout, role, info.address, cluster.security
        )
        info = info if asyncio.run(reached) else None
    beside.reached(info)
    return info


def end_job(world: Any, job: Job, code: int) -> None:
    """Tell every rank the job is over, with the script's status; first, end
    it at once where workers were lost with their node."""
    try:
        if job.workers_came.is_set():
            end_at_once_if_workers_were_lost(world, job.workers_seen(), job.info.address,
                                             security_from(job.credentials), code)
    finally:
        send_to_all(world, code, TAG_END)  # every rank waits for this word


def serve_driver(world: Any, cluster: Cluster) -> int:
    info = scheduler_reached(world, cluster, Beside())
    if info is None:
        return 2
    job = Job(cluster.args, info, cluster.layout, cluster.log_dir, cluster.credentials,
              cluster.private)
    code = 1

    def end_at_a_hard_exit(status: int) -> None:  # os._exit skips play_role's own end
        job.end(status)
        remove_private(cluster.private)

    try:
        with hard_exit_ends_the_job(world, cluster.layout.hosts, end_at_a_hard_exit):
            code = drive_until_interrupted(job, reads_stdin=False)
    except BaseException:
        send_to_all(world, code, TAG_END)  # a fault of ours: the others must not wait
        raise
    end_job(world, job, code)
    return code


def plan_cluster(
    args: argparse.Namespace, rank_nodes: list[int], nodes: list[Node],
    rank_masks: list[dict[str, str]],
) -> tuple[Layout, list[str | None], str | None]:
    """Roles, the interface of each node's servers, and how it was chosen."""
    if args.gpus_per_node is None:
        nodes = with_rank_masks(rank_nodes, nodes, rank_masks)
    layout = plan_layout(rank_nodes, nodes, nthreads=args.nthreads,
                         memory_limit=args.memory_limit, joining=args.join_tag, shape=args.shape)
    hosts = [node.host for node in nodes]
    interfaces, note = interfaces_for(args.interface, hosts, [n.addresses for n in nodes])
    return layout, interfaces, note


def agree_on_cluster(
    world: Any, args: argparse.Namespace
) -> tuple[Layout, argparse.Namespace, str | None] | None:
    """Every rank's role, agreed by all, and this rank's options with the
    interface its node uses; None when the nodes cannot host the plan."""
    found = gather_nodes(
        world,
        lambda: this_node(args.gpus_per_node, args.require_gpu, args.gpu_vendor,
                          memory=MEMORY_LIMIT),
        lambda: own_masks(os.environ),
    )
    if found is None:
        return None
    rank_nodes, nodes, rank_masks = found
    planned, error = attempt(plan_cluster, args, rank_nodes, nodes, rank_masks)
    if not agree(world, error):
        return None
    layout, interfaces, note = planned
    node = rank_nodes[world.rank]
    return layout, options_on_node(args, nodes[node], interfaces[node]), note


def options_on_node(
    args: argparse.Namespace, node: Node, interface: str | None
) -> argparse.Namespace:
    """A rank's options on ``node``: its servers' interface, and its scratch as
    the node's first rank found it (so that DNS is asked once a node)."""
    return argparse.Namespace(**{
        **vars(args),
        "interface": interface,
        "local_directory": args.local_directory or node.scratch or None,
    })


def prepare_rank(
    layout: Layout, rank: int, args: argparse.Namespace, log_dir: Path
) -> tuple[Path, Path]:
    """Open this rank's log, check what its roles need, and make its private
    folder; return the log file its worker process (if any) writes, and that
    folder."""
    role = layout.roles[rank]
    private_dir(log_dir, "--log-dir")  # where it is node-local, made on each node
    try:
        log_to_file(log_dir / f"rank{role.rank}-{role.kind}.log", args.verbose)
    except OSError as e:
        raise LaunchError(f"cannot write logs to {log_dir} on {role.host}: {e.strerror}") from None
    for each in (role, *layout.beside_rank(rank)):
        preflight(each, args)
    try:
        private = private_folder(os.environ)
    except OSError as e:
        raise LaunchError(f"cannot make a private folder in {runtime_folder(os.environ)} on "
                          f"{role.host}: {e.strerror}; set TMPDIR to a folder of yours") from None
    return log_dir / f"rank{role.rank}-worker-process.log", private


def run_rank(world: Any, args: argparse.Namespace) -> int:
    """This rank's part of the job, ended together with the other ranks."""
    hosts: list[str] = []  # each rank's node, once agreed: the end names lost ones
    code = ended_if_a_rank_is_lost(world, hosts, lambda: play_role(world, args, hosts))
    runs_the_script = world.rank == args.shape.driver_rank  # asked before MPI is finalised
    if exit_together(world, code, hosts) and not runs_the_script:
        leave_without_teardown(code)
    return code


def ended_if_a_rank_is_lost(world: Any, hosts: list[str], serve: Callable[[], int]) -> int:
    """``serve()``'s status; where it finds a rank lost, the job ends here."""
    try:
        return serve()
    except RankLost as e:
        end_job_for_lost_rank(world, e.rank, hosts)


def end_job_for_lost_rank(world: Any, rank: int, hosts: list[str]) -> NoReturn:
    """A rank died (the driver, say) under a launcher that keeps the others
    running: the scheduler's rank says so once and ends the job; another rank
    that saw it first gives the scheduler's rank a moment to."""
    if world.rank == SCHEDULER_RANK:
        what = "driver" if rank == DRIVER_RANK else f"rank {rank}"
        where = hosts[rank] if rank < len(hosts) else "its node"
        report(f"lost the {what} (rank {rank} on {where}): the job ends")
    else:
        time.sleep(LEAVE_GRACE)
    abort_job(world, 1)


def prepare_cluster(
    world: Any, args: argparse.Namespace, hosts: list[str],
    name_worker: Callable[[Role], Any] | None = None,
) -> Cluster | None:
    """Agree on the layout, the log folder and the credentials, and check what
    this rank's role needs; None when a rank found a mistake (rank 0 said it).
    ``hosts`` is given each rank's node; ``name_worker`` names the workers
    (default: after their node and GPU)."""
    if world.size < args.shape.min_world_size:
        if world.rank == SCHEDULER_RANK:
            report(world_too_small(world.size, args.shape))
        return None
    agreed = agree_on_cluster(world, args)
    if agreed is None:
        return None
    layout, args, network_note = agreed
    if name_worker is not None:
        layout = renamed_workers(layout, name_worker)
    hosts += layout.hosts
    made = attempt(make_log_dir, args.log_dir) if world.rank == SCHEDULER_RANK else None
    log_dir, error = world.bcast(made, root=SCHEDULER_RANK)
    key, key_error = attempt(new_key) if args.tls else (None, None)
    if not agree(world, error or key_error):
        return None
    names = [f"{role.kind} rank {role.rank} on {role.host}" for role in layout.roles]
    credentials = certify_ranks(world, key, names, SCHEDULER_RANK) if key else None
    role = layout.roles[world.rank]
    prepared, error = attempt(prepare_rank, layout, world.rank, args, log_dir)
    if not agree(world, error):
        if prepared:
            remove_private(prepared[1])
        return None
    worker_log, private = prepared
    if args.verbose and world.rank == SCHEDULER_RANK:
        plan = "\n".join(["Plan:", *(f"    {line}" for line in describe_layout(layout))])
        # One write, newline included: print's two would let the driver's lines,
        # which mpirun forwards from another process, fall between them.
        sys.stdout.write(plan + "\n")
    logger.info("rank %d on %s: %s", world.rank, role.host, role)
    return Cluster(layout, args, log_dir, credentials, security_from(credentials), worker_log,
                   network_note, private)


def renamed_workers(layout: Layout, name: Callable[[Role], Any]) -> Layout:
    return replace(
        layout,
        roles=tuple(replace(role, name=name(role)) if role.kind == "worker" else role
                    for role in layout.roles),
        beside=tuple(replace(role, name=name(role)) for role in layout.beside),
    )


def serve_role(world: Any, cluster: Cluster) -> int:
    """This rank's server, the scheduler, a worker or none, until the job ends."""
    role = cluster.layout.roles[world.rank]
    if role.kind == "scheduler":
        return asyncio.run(serve_scheduler(world, cluster, Beside()))
    if role.kind == "worker":
        return asyncio.run(serve_worker(world, cluster, role))
    return asyncio.run(stay_idle(world, cluster.layout, role, cluster.security))


def play_role(world: Any, args: argparse.Namespace, hosts: list[str]) -> int:
    cluster = prepare_cluster(world, args, hosts)
    if cluster is None:
        return 2
    try:
        if cluster.layout.roles[world.rank].kind == "driver":
            return serve_driver(world, cluster)
        return serve_role(world, cluster)
    finally:
        remove_private(cluster.private)
