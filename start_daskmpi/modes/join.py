"""--join SCHEDULER_FILE: a second mpirun adds its ranks' workers to a running
cluster of the same user (more nodes, CPU nodes beside GPU nodes).

The first job, given --scheduler-file, notes in that file where its client's
credentials are (the client.env of the driver's private folder); the joining
job reads them (client_files.py), so only a process of the same user, on a
node that sees that folder, can join.  Every rank of the joining job serves
workers (one per GPU), named apart from the first job's; they leave when
either job ends: the first job's scheduler closing, or a signal to this one.
"""
from __future__ import annotations

import asyncio
import secrets
import signal
import sys
from collections.abc import Sequence
from typing import Any

from start_daskmpi.driver.client_files import ClusterFiles, read_cluster_file, read_credentials
from start_daskmpi.errors import MISTAKE, attempt, report, warn
from start_daskmpi.lifecycle.cluster import Cluster, Planner, prepare
from start_daskmpi.lifecycle.ending import leave_together
from start_daskmpi.lifecycle.liveness import everyone_reaches_the_scheduler
from start_daskmpi.lifecycle.roles import work_until
from start_daskmpi.mpi.world import agree
from start_daskmpi.plan.config import Config
from start_daskmpi.plan.layout import DRIVER_RANK, Layout, Node, Role, assign_roles
from start_daskmpi.security.private import remove_private
from start_daskmpi.servers.info import registered_workers

SCHEDULER_POLL = 1.0  # seconds between a rank's looks at the scheduler


def run_joining(world: Any, config: Config) -> int:
    """This rank's part of a joining job, ended together with its other ranks,
    a mistake too: MPICH's mpirun kills the ranks still running as soon as one
    exits non-zero, and reports the kill."""
    files, error = attempt(read_cluster_file, config.run.join, "--join")
    credentials, credentials_error = (
        attempt(read_credentials, files, "--join") if files else (None, None))
    if not agree(world, error or credentials_error):
        return leave_together(world, MISTAKE, [], DRIVER_RANK, runs_the_script=False)
    tag = join_tag(world)
    cluster = prepare(world, config, joined_roles(tag), credentials=credentials,
                      make_credentials=False)
    if cluster is None:
        return leave_together(world, MISTAKE, [], DRIVER_RANK, runs_the_script=False)
    try:
        code = serve_the_joined_cluster(world, cluster, files, tag)
    finally:
        remove_private(cluster.private)
    return leave_together(world, code, cluster.hosts, DRIVER_RANK, runs_the_script=False)


def join_tag(world: Any) -> str:
    """What tells this job's worker names apart from the first job's and from
    another joining job's, the same on every rank."""
    return world.bcast(f"join{secrets.token_hex(2)}" if world.rank == 0 else None, root=0)


def joined_roles(tag: str) -> Planner:
    """Every rank serves workers, named ``*-tag``; the scheduler is the first job's."""
    def roles(config: Config, rank_nodes: Sequence[int], nodes: Sequence[Node],
              rank_masks: Any) -> Layout:
        return assign_roles(rank_nodes, nodes, nthreads=config.workers.nthreads,
                            memory_limit=config.workers.memory_limit, joining=tag)

    return roles


def serve_the_joined_cluster(world: Any, cluster: Cluster, files: ClusterFiles, tag: str) -> int:
    reached = everyone_reaches_the_scheduler(world, cluster.layout, cluster.role, files.address,
                                             cluster.security)
    if not asyncio.run(reached):
        return MISTAKE
    if world.rank == 0:
        say_it_joins(cluster, files, tag)
    code = asyncio.run(serve_joined(cluster, files.address))
    if world.rank == 0:
        why = (f"The cluster at {files.address} has ended" if code == 0
               else f"Interrupted ({signal.Signals(code - 128).name})" if code > 128
               else "A worker failed")
        print(f"{why}: the joined workers left", flush=True)
    return code


def say_it_joins(cluster: Cluster, files: ClusterFiles, tag: str) -> None:
    layout = cluster.layout
    print(f"Joining the cluster at {files.address} with {len(layout.workers)} worker(s) "
          f"(named *-{tag}); they leave when that cluster ends, or this job "
          f"does. Logs: {cluster.log_dir}", flush=True)
    notes = list(layout.notes)
    if cluster.credentials is None:
        notes.append(f"the cluster at {files.address} has no TLS (--no-tls): anyone who "
                     "can reach it can run code as you on it, on these workers too")
    for note in notes:
        warn(note)
    sys.stdout.flush()


async def serve_joined(cluster: Cluster, address: str) -> int:
    """This rank's worker (or none: an idle rank) in the joined cluster, until
    that cluster ends (0) or a signal ends this job (128 + N)."""
    end = the_end_of_either_job(address, cluster)

    async def say(role: Role, why: str) -> int:
        report(f"worker {role.name} (rank {role.rank}) failed to join: {why}")
        return 1

    if cluster.role.kind != "worker":
        return await end
    return await work_until(end, address, cluster, cluster.role, say)


def the_end_of_either_job(address: str, cluster: Cluster) -> asyncio.Future[int]:
    """0 once the first job's scheduler no longer answers (that job has
    ended), 128 + N once signal N ends this one."""
    loop = asyncio.get_running_loop()
    end: asyncio.Future[int] = loop.create_future()
    for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        loop.add_signal_handler(signum, lambda n=signum: end.done() or end.set_result(128 + n))

    async def scheduler_gone() -> None:
        while await registered_workers(address, cluster.security) is not None:
            await asyncio.sleep(SCHEDULER_POLL)
        if not end.done():
            end.set_result(0)

    loop.create_task(scheduler_gone())
    return end
