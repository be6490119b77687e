"""--join SCHEDULER_FILE: a second mpirun adds its ranks' workers to a running
cluster of the same user (more nodes, CPU nodes beside GPU nodes).

The first job, given --scheduler-file, notes in that file where its client's
credentials are (the client.env of the driver's private folder); the joining
job reads them (client_files.py), so only a process of the same user, on a
node that sees that folder, can join.  Every rank of the joining job serves workers (one per GPU),
named apart from the first job's; they leave when either job ends: the first
job's scheduler closing, or a signal to this one.
"""
from __future__ import annotations

import argparse
import asyncio
import secrets
import signal
import sys
from pathlib import Path
from typing import Any

from .client_files import ClusterFiles, read_cluster_file, read_credentials
from .errors import attempt, report

SCHEDULER_POLL = 1.0  # seconds between an idle rank's looks at the scheduler


def join_tag(world: Any) -> str:
    """What tells this job's worker names apart from the first job's and from
    another joining job's, the same on every rank."""
    return world.bcast(f"join{secrets.token_hex(2)}" if world.rank == 0 else None, root=0)


async def scheduler_gone(address: str, security: Any) -> None:
    """Return once the scheduler no longer answers (its job has ended)."""
    from .servers import registered_workers

    while await registered_workers(address, security) is not None:
        await asyncio.sleep(SCHEDULER_POLL)


async def serve_joined(
    args: argparse.Namespace, role: Any, address: str, security: Any, log_file: Path
) -> int:
    """This rank's worker (or none: an idle rank) in the joined cluster, until
    that cluster ends (0) or a signal ends this job (128 + N)."""
    from .places import private_scratch
    from .roles import unless_ended
    from .servers import describe, make_worker, stop_worker

    loop = asyncio.get_running_loop()
    stopped: asyncio.Future[int] = loop.create_future()
    for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        loop.add_signal_handler(
            signum, lambda n=signum: stopped.done() or stopped.set_result(128 + n)
        )
    if role.kind != "worker":
        await unless_ended(stopped, scheduler_gone(address, security))
        return stopped.result() if stopped.done() else 0
    with private_scratch(args.local_directory) as scratch:
        server = make_worker(address, role, args, security, log_file, scratch)
        try:
            if await unless_ended(stopped, server):
                await unless_ended(stopped, server.finished())
        except Exception as e:
            report(f"worker {role.name} (rank {role.rank}) failed to join: {describe(e)}")
            return 1
        finally:
            await stop_worker(server)
    return stopped.result() if stopped.done() else 0


def run_joining(world: Any, args: argparse.Namespace) -> int:
    """This rank's part of a joining job, ended together with its other ranks,
    a mistake too: MPICH's mpirun kills the ranks still running as soon as one
    exits non-zero, and reports the kill."""
    from .mpi import exit_together, leave_without_teardown

    hosts: list[str] = []
    code = join_cluster(world, args, hosts)
    if exit_together(world, code, hosts):  # its ranks run no script
        leave_without_teardown(code)
    return code


def join_cluster(world: Any, args: argparse.Namespace, hosts: list[str]) -> int:
    """Join the cluster, serve this rank's worker until either job ends; its
    status.  ``hosts`` is given each rank's node, once agreed."""
    from .mpi import agree
    from .places import make_log_dir
    from .roles import agree_on_cluster, prepare_rank
    from .security import remove_private

    target, error = attempt(read_cluster_file, args.join, "--join")
    credentials, credentials_error = (
        attempt(read_credentials, target, "--join") if target else (None, None)
    )
    if not agree(world, error or credentials_error):
        return 2
    args.join_tag = join_tag(world)
    agreed = agree_on_cluster(world, args)
    if agreed is None:
        return 2
    layout, args, _ = agreed
    hosts += layout.hosts
    made = attempt(make_log_dir, args.log_dir) if world.rank == 0 else None
    log_dir, error = world.bcast(made, root=0)
    prepared, rank_error = (
        attempt(prepare_rank, layout, world.rank, args, log_dir) if log_dir else (None, None)
    )
    try:
        if not agree(world, error or rank_error):
            return 2
        return serve_the_joined_cluster(world, args, layout, target, credentials, log_dir,
                                        prepared[0])
    finally:
        if prepared:
            remove_private(prepared[1])


def serve_the_joined_cluster(
    world: Any, args: argparse.Namespace, layout: Any, target: ClusterFiles, credentials: Any,
    log_dir: Path, log_file: Path,
) -> int:
    from .liveness import everyone_reaches_the_scheduler
    from .security import security_from

    role = layout.roles[world.rank]
    security = security_from(credentials)
    reached = everyone_reaches_the_scheduler(world, layout, role, target.address, security)
    if not asyncio.run(reached):
        return 2
    if world.rank == 0:
        print(f"Joining the cluster at {target.address} with {len(layout.workers)} worker(s) "
              f"(named *-{args.join_tag}); they leave when that cluster ends, or this job "
              f"does. Logs: {log_dir}", flush=True)
        notes = list(layout.notes)
        if credentials is None:
            notes.append(f"the cluster at {target.address} has no TLS (--no-tls): anyone who "
                         "can reach it can run code as you on it, on these workers too")
        for note in notes:
            print(f"start_daskmpi: warning: {note}", file=sys.stderr, flush=True)
    code = asyncio.run(serve_joined(args, role, target.address, security, log_file))
    if world.rank == 0:
        why = (f"The cluster at {target.address} has ended" if code == 0
               else f"Interrupted ({signal.Signals(code - 128).name})" if code > 128
               else "A worker failed")
        print(f"{why}: the joined workers left", flush=True)
    return code
