"""No mpirun: the same cluster on this node alone, its servers made as under
mpirun (servers.py), in an event loop of this process, and the driver here."""
from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from distributed import Security
from distributed.deploy.utils import nprocesses_nthreads
from distributed.system import MEMORY_LIMIT

from .checks import preflight
from .driver import Job, drive_until_interrupted
from .errors import LaunchError
from .layout import Layout, plan_local
from .logs import log_to_file
from .loop_thread import event_loop_thread
from .node import this_node
from .places import make_log_dir, private_scratch
from .security import job_authority, private_files, security_from
from .servers import (
    WORKERS_LEAVE_TIMEOUT,
    SchedulerInfo,
    describe,
    make_worker,
    scheduler_info,
    start_scheduler,
    stop_worker,
    worker_pre_imports,
)
from .worker_processes import start_fork_server

START_TIMEOUT_MARGIN = 30.0  # seconds past --startup-timeout before a start is given up


def local_layout(args: argparse.Namespace) -> Layout:
    node = this_node(args.gpus_per_node, args.require_gpu, args.gpu_vendor, memory=MEMORY_LIMIT)
    # LocalCluster's own split of the cores (distributed.deploy.utils, since 2.x).
    layout = plan_local(node, nprocesses_nthreads(node.cores),
                        nthreads=args.nthreads, memory_limit=args.memory_limit)
    if not args.nanny and len([r for r in layout.workers if r.gpu is not None]) > 1:
        raise LaunchError(
            "--no-nanny runs every worker in this one process, where they cannot each have "
            "a GPU of their own: keep the nanny, or use mpirun"
        )
    return layout


@contextlib.contextmanager
def local_cluster(
    args: argparse.Namespace, layout: Layout, securities: tuple[Security, Security],
    log_dir: Path, private: Path,
) -> Iterator[SchedulerInfo]:
    """The scheduler and every worker of ``layout``, started; closed on exit.
    ``securities``: the scheduler's and the workers'; ``private``: this
    process's private folder, for the scheduler's scratch and dashboard."""
    started: list[Any] = []
    for_scheduler, for_workers = securities

    async def start() -> SchedulerInfo:
        if args.nanny:  # its imports, --pre-import's too, overlap the scheduler's start
            wanted = (name for role in layout.workers for name in worker_pre_imports(args, role))
            start_fork_server(imports=list(dict.fromkeys(wanted)))
        scheduler, dashboard = await start_scheduler(args, for_scheduler, len(layout.workers),
                                                     private)
        started.append(scheduler)
        workers = [
            make_worker(scheduler.address, role, args, for_workers,
                        log_dir / f"worker-{role.name}.log", scratch)
            for role in layout.workers
        ]
        started.extend(workers)
        try:
            await asyncio.wait_for(asyncio.gather(*workers), args.startup_timeout)
        except Exception as e:
            raise LaunchError(f"the local cluster failed to start: {describe(e)}") from None
        return scheduler_info(scheduler, dashboard)

    async def stop() -> None:
        scheduler, *workers = started or [None]
        await asyncio.gather(*(stop_worker(worker) for worker in workers))
        if scheduler is not None:
            await scheduler.close()

    with private_scratch(args.local_directory) as scratch, \
            event_loop_thread("local cluster") as run:
        try:
            yield run(start(), args.startup_timeout + START_TIMEOUT_MARGIN)
        finally:
            run(stop(), WORKERS_LEAVE_TIMEOUT * 2)


def run_local(args: argparse.Namespace) -> int:
    layout = local_layout(args)
    log_dir = make_log_dir(args.log_dir)
    log_to_file(log_dir / "local.log", args.verbose)
    for role in layout.roles:
        preflight(role, args)
    print("Starting the scheduler", flush=True)
    # Keys of their own for the scheduler, the workers and the client, as under MPI.
    authority = job_authority() if args.tls else None
    scheduler, workers, client = (
        authority.credentials(f"{kind} on this node") if authority else None
        for kind in ("scheduler", "workers", "client")
    )
    securities = security_from(scheduler), security_from(workers)
    with private_files(os.environ) as private, \
            local_cluster(args, layout, securities, log_dir, private) as info:
        job = Job(args, info, layout, log_dir, client, private)
        return drive_until_interrupted(job, reads_stdin=True)
