"""The local cluster, without mpirun: the same roles as under mpirun (one
worker per GPU, else LocalCluster's split of the cores), living the same
life in a world of this one process, every role beside the driver's (the
workers behind nannies in processes of their own)."""
from __future__ import annotations

from dataclasses import replace
from typing import Any

from distributed.deploy.utils import nprocesses_nthreads

from start_daskmpi.errors import MISTAKE, LaunchError
from start_daskmpi.lifecycle.cluster import prepare
from start_daskmpi.lifecycle.first_imports import worker_imports
from start_daskmpi.modes.launcher import drive
from start_daskmpi.mpi.world import ProcessWorld
from start_daskmpi.plan.config import Config
from start_daskmpi.plan.layout import SCHEDULER_RANK, Layout, Node, assign_local_roles
from start_daskmpi.security.private import remove_private
from start_daskmpi.servers.worker_processes import start_fork_server


def run_local(config: Config) -> int:
    if config.workers.nanny:  # a fresh server, importing while the scheduler starts
        start_fork_server(imports=worker_imports(config))
    world = ProcessWorld()
    cluster = prepare(world, config, local_roles)
    if cluster is None:
        return MISTAKE
    try:
        return drive(world, cluster)
    finally:
        remove_private(cluster.private)


def local_roles(config: Config, rank_nodes: Any, nodes: list[Node], rank_masks: Any) -> Layout:
    """The roles of a cluster of this node alone, all in this process."""
    node = nodes[0]
    # LocalCluster's own split of the cores (distributed.deploy.utils, since 2.x).
    layout = assign_local_roles(node, nprocesses_nthreads(node.cores),
                                nthreads=config.workers.nthreads,
                                memory_limit=config.workers.memory_limit)
    if not config.workers.nanny and len([r for r in layout.workers if r.gpu is not None]) > 1:
        raise LaunchError(
            "--no-nanny runs every worker in this one process, where they cannot each have "
            "a GPU of their own: keep the nanny, or use mpirun"
        )
    return in_one_process(layout)


def in_one_process(layout: Layout) -> Layout:
    """``layout``'s roles, every one in rank 0's process: the scheduler, the
    driver beside it, the workers beside them."""
    return Layout(roles=(layout.roles[SCHEDULER_RANK],), notes=layout.notes,
                  driver_rank=SCHEDULER_RANK,
                  beside=tuple(replace(role, rank=SCHEDULER_RANK) for role in layout.workers))
