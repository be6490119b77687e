"""What every rank agrees on before any server starts (a Cluster): the roles,
each node's interface and scratch, the log folder, each rank's private
folder and TLS credentials, each rank's checks.  One step for every mode:
the command under mpirun, --join, initialize() and the local cluster, each
with its own planning of the roles (a Planner)."""
from __future__ import annotations

import logging
import os
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from distributed import Security
from distributed.system import MEMORY_LIMIT

from start_daskmpi.errors import LaunchError, attempt
from start_daskmpi.lifecycle.checks import preflight
from start_daskmpi.mpi.world import agree, gather_nodes
from start_daskmpi.plan.config import Config
from start_daskmpi.plan.folders import local_directory
from start_daskmpi.plan.gpus import own_masks
from start_daskmpi.plan.layout import (
    SCHEDULER_RANK,
    Layout,
    Node,
    Role,
    assign_roles,
    describe_layout,
    with_rank_masks,
)
from start_daskmpi.plan.network import interfaces_for
from start_daskmpi.plan.node import this_node
from start_daskmpi.security.private import (
    make_log_dir,
    private_dir,
    private_folder,
    remove_private,
    runtime_folder,
)
from start_daskmpi.security.tls import Credentials, certify_ranks, new_key, security_from
from start_daskmpi.servers.logs import log_to_file

logger = logging.getLogger("start_daskmpi")

# The roles of every rank, from what each rank's node offers: (config, each
# rank's node, the nodes, each rank's GPU masks) -> Layout.
Planner = Callable[[Config, Sequence[int], Sequence[Node], Sequence[dict[str, str]]], Layout]


@dataclass(frozen=True)
class Cluster:
    """What every rank agreed on before any server starts, as this rank holds it."""

    layout: Layout
    rank: int  # this rank's, in the world it was agreed in
    config: Config
    interface: str | None  # the one this rank's node's servers use (None: loopback)
    scratch: str  # this node's scratch, for the workers' spilled data
    log_dir: Path
    credentials: Credentials | None  # this rank's own
    private: Path  # this rank's private folder on its node: its scratch, its sockets
    network_note: str | None  # how the interface was chosen, for the driver to say

    @property
    def security(self) -> Security:
        return security_from(self.credentials)

    @property
    def role(self) -> Role:
        return self.layout.roles[self.rank]

    @property
    def hosts(self) -> list[str]:
        return self.layout.hosts

    def worker_log(self, role: Role) -> Path:
        """Where a worker's process logs: its rank's, or its own where it runs
        beside another role (several may share a process)."""
        if role in self.layout.beside:
            return self.log_dir / f"worker-{role.name}.log"
        return self.log_dir / f"rank{role.rank}-worker-process.log"


def command_roles(config: Config, rank_nodes: Sequence[int], nodes: Sequence[Node],
                  rank_masks: Sequence[dict[str, str]]) -> Layout:
    """The roles as the command (and initialize()) give them: the scheduler,
    the driver, one worker per GPU; a node whose ranks each have a GPU mask of
    their own keeps them."""
    if config.workers.gpus_per_node is None:
        nodes = with_rank_masks(rank_nodes, nodes, rank_masks)
    return assign_roles(rank_nodes, nodes, nthreads=config.workers.nthreads,
                        memory_limit=config.workers.memory_limit, shape=config.shape)


def prepare(
    world: Any, config: Config, roles: Planner = command_roles,
    credentials: Credentials | None = None, make_credentials: bool = True,
    name_worker: Callable[[Role], Any] | None = None,
) -> Cluster | None:
    """Agree on the cluster: None when a rank found a mistake (rank 0 said it).
    ``roles`` plans them; each rank makes its TLS credentials (with --tls),
    unless told not to, being given the job's (--join: ``credentials``, None
    for a cluster without TLS); ``name_worker`` names the workers (default:
    after their node and GPU)."""
    agreed = agree_on_the_nodes(world, config, roles)
    if agreed is None:
        return None
    layout, interfaces, scratches, note = agreed
    if name_worker is not None:
        layout = renamed_workers(layout, name_worker)
    made = attempt(make_log_dir, config.run.log_dir) if world.rank == SCHEDULER_RANK else None
    log_dir, error = world.bcast(made, root=SCHEDULER_RANK)
    key, key_error = (attempt(new_key) if config.network.tls and make_credentials
                      else (None, None))
    if not agree(world, error or key_error):
        return None
    if key is not None:
        names = [f"{role.kind} rank {role.rank} on {role.host}" for role in layout.roles]
        credentials = certify_ranks(world, key, names, SCHEDULER_RANK)
    interface, scratch = interfaces[world.rank], scratches[world.rank]
    private, error = attempt(prepare_rank, layout, world.rank, config, log_dir, interface,
                             scratch)
    if not agree(world, error):
        if private:
            remove_private(private)
        return None
    if config.run.verbose and world.rank == SCHEDULER_RANK:
        plan = "\n".join(["Plan:", *(f"    {line}" for line in describe_layout(layout))])
        # One write, newline included: print's two would let the driver's lines,
        # which mpirun forwards from another process, fall between them.
        sys.stdout.write(plan + "\n")
    logger.info("rank %d on %s: %s", world.rank, layout.roles[world.rank].host,
                layout.roles[world.rank])
    return Cluster(layout, world.rank, config, interface, scratch, log_dir, credentials,
                   private, note)


def agree_on_the_nodes(
    world: Any, config: Config, roles: Planner
) -> tuple[Layout, list[str | None], list[str], str | None] | None:
    """Every rank's role, and each rank's interface and scratch, by its node;
    how the interface was chosen; None when the nodes cannot host the plan."""
    workers = config.workers
    found = gather_nodes(
        world,
        lambda: this_node(workers.gpus_per_node, workers.require_gpu, workers.gpu_vendor,
                          memory=MEMORY_LIMIT),
        lambda: own_masks(os.environ),
    )
    if found is None:
        return None
    rank_nodes, nodes, rank_masks = found
    planned, error = attempt(roles_and_interfaces, config, rank_nodes, nodes, rank_masks, roles)
    if not agree(world, error):
        return None
    layout, interfaces, note = planned
    scratches = [scratch_of(config, nodes[node]) for node in rank_nodes]
    return layout, [interfaces[node] for node in rank_nodes], scratches, note


def scratch_of(config: Config, node: Node) -> str:
    """The workers' scratch on ``node``: as its first rank found it (DNS asked
    once a node, for its site's), unless --local-directory names one."""
    return config.workers.local_directory or node.scratch or local_directory(None)


def roles_and_interfaces(
    config: Config, rank_nodes: Sequence[int], nodes: Sequence[Node],
    rank_masks: Sequence[dict[str, str]], roles: Planner,
) -> tuple[Layout, list[str | None], str | None]:
    """The roles, the interface of each node's servers, and how it was chosen."""
    layout = roles(config, rank_nodes, nodes, rank_masks)
    interfaces, note = interfaces_for(config.network.interface, [n.host for n in nodes],
                                      [n.addresses for n in nodes])
    return layout, interfaces, note


def prepare_rank(layout: Layout, rank: int, config: Config, log_dir: Path,
                 interface: str | None, scratch: str) -> Path:
    """Open this rank's log, check what its roles need, and make its private
    folder, which it returns."""
    role = layout.roles[rank]
    private_dir(log_dir, "--log-dir")  # where it is node-local, made on each node
    try:
        log_to_file(log_dir / f"rank{role.rank}-{role.kind}.log", config.run.verbose)
    except OSError as e:
        raise LaunchError(f"cannot write logs to {log_dir} on {role.host}: {e.strerror}") from None
    for each in (role, *layout.beside_rank(rank)):
        preflight(each, config, interface, scratch)
    try:
        return private_folder(os.environ)
    except OSError as e:
        raise LaunchError(f"cannot make a private folder in {runtime_folder(os.environ)} on "
                          f"{role.host}: {e.strerror}; set TMPDIR to a folder of yours") from None


def renamed_workers(layout: Layout, name: Callable[[Role], Any]) -> Layout:
    return replace(
        layout,
        roles=tuple(replace(role, name=name(role)) if role.kind == "worker" else role
                    for role in layout.roles),
        beside=tuple(replace(role, name=name(role)) for role in layout.beside),
    )
