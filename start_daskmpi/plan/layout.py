"""Which rank does what, on which node and GPU: ranks x nodes x GPUs -> roles.

Pure: it knows nothing of MPI or Dask, only what each node offers (a Node) and
where the launcher placed each rank.
"""
from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, replace

from start_daskmpi.errors import LaunchError
from start_daskmpi.plan.network import Address

SCHEDULER_RANK = 0
DRIVER_RANK = 1


@dataclass(frozen=True)
class Node:
    """What a node offers, as its first rank found it."""

    host: str
    gpus: tuple[str, ...]  # entries of the GPU mask (CUDA_VISIBLE_DEVICES...), one per GPU
    cores: int
    memory: int  # bytes
    pin: str = "CUDA_VISIBLE_DEVICES"  # the variable that gives a process its GPUs
    addresses: tuple[Address, ...] = ()
    scratch: str = ""  # the default --local-directory there: found once a node (it asks DNS)


@dataclass(frozen=True)
class Role:
    rank: int
    kind: str  # "scheduler", "driver", "worker" or "idle"
    host: str
    name: str | int | None = None  # a worker's Dask name (an int: its rank, as dask-mpi names)
    gpu: str | None = None
    nthreads: int = 0
    memory_limit: int | str = 0
    pin: str = "CUDA_VISIBLE_DEVICES"

    def environment(self) -> dict[str, str]:
        """What pins this role's processes to its GPU, set before anything touches it."""
        return {} if self.gpu is None else {self.pin: self.gpu}


@dataclass(frozen=True)
class Shape:
    """Which processes the driver and the workers run in.  The command gives
    every role a rank of its own; dask-mpi's execute() may share them: the
    client on the scheduler's rank (``driver_rank`` 0), and with
    ``exclusive_workers`` False a worker beside the scheduler and the driver."""

    driver_rank: int = DRIVER_RANK  # DRIVER_RANK, or SCHEDULER_RANK: beside the scheduler
    exclusive_workers: bool = True

    @property
    def min_world_size(self) -> int:
        """The scheduler's rank, the driver's if its own, and one worker's."""
        return self.driver_rank + 1 + self.exclusive_workers


MIN_WORLD_SIZE = Shape().min_world_size  # the command's: each role a rank of its own


@dataclass(frozen=True)
class Layout:
    roles: tuple[Role, ...]  # each rank's own role, by rank
    notes: tuple[str, ...] = ()
    driver_rank: int = DRIVER_RANK
    beside: tuple[Role, ...] = ()  # workers run in the process of their rank, beside its role

    @property
    def workers(self) -> list[Role]:
        return [role for role in self.roles if role.kind == "worker"] + list(self.beside)

    def beside_rank(self, rank: int) -> list[Role]:
        return [role for role in self.beside if role.rank == rank]

    @property
    def hosts(self) -> list[str]:
        """Each rank's node."""
        return [role.host for role in self.roles]

    @property
    def first_ranks(self) -> list[int]:
        """The first rank of each node, in the order of the nodes."""
        first: dict[str, int] = {}
        for role in self.roles:
            first.setdefault(role.host, role.rank)
        return list(first.values())


def world_too_small(size: int, shape: Shape = Shape()) -> str:
    need = shape.min_world_size
    if shape != Shape():
        return f"needs at least {need} ranks for this placement of the roles (got {size})"
    return (
        f"needs at least {need} ranks: one for the scheduler, one for your "
        f"script and one per worker (got {size}); use e.g. mpirun -np {need}, "
        "or run without mpirun for a local cluster"
    )


def format_ranks(ranks: Iterable[int]) -> str:
    """Compress ranks into runs: [2, 3, 4, 7] -> '2-4, 7'."""
    runs: list[list[int]] = []
    for rank in sorted(ranks):
        if runs and rank == runs[-1][-1] + 1:
            runs[-1].append(rank)
        else:
            runs.append([rank])
    return ", ".join(str(r[0]) if len(r) == 1 else f"{r[0]}-{r[-1]}" for r in runs)


def worker_name(host: str, gpu: str | None, index: int) -> str:
    if gpu is None:
        return f"{host}-cpu{index}"
    return f"{host}-gpu{gpu if gpu.isdigit() else index}"


def fitting_count(nodes: Sequence[Node]) -> int:
    """The rank count that gives every GPU one worker and leaves no rank idle."""
    return DRIVER_RANK + 1 + sum(len(node.gpus) for node in nodes)


def fitting_ranks(nodes: Sequence[Node]) -> str:
    """fitting_count(), said as the -np that fits and where the ranks go."""
    first, others = nodes[0], nodes[1:]
    total = fitting_count(nodes)
    if not others:
        return f"-np {total}"
    return (
        f"-np {total}, with {len(first.gpus) + 2} ranks on {first.host} "
        "and one per GPU on the other nodes"
    )


def with_rank_masks(
    rank_nodes: Sequence[int], nodes: Sequence[Node], rank_masks: Sequence[Mapping[str, str]]
) -> list[Node]:
    """The nodes, where the batch system gave each rank a GPU mask of its own
    (Slurm's --gpus-per-task or --gpu-bind, ALCF's affinity wrapper): there, the
    worker ranks' own masks, in rank order, are the node's GPUs, so that each
    worker keeps its own.  Masks all alike stand for the node, as its first rank
    found them."""
    result = list(nodes)
    each_node = zip(nodes, worker_ranks(rank_nodes, len(nodes)), strict=True)
    for index, (node, ranks) in enumerate(each_node):
        masks = [rank_masks[r].get(node.pin) for r in ranks]
        if node.gpus and None not in masks and len(set(masks)) > 1:
            result[index] = replace(node, gpus=tuple(str(mask) for mask in masks))
    return result


def assign_roles(
    rank_nodes: Sequence[int],
    nodes: Sequence[Node],
    *,
    nthreads: int | None = None,
    memory_limit: str = "auto",
    joining: str | None = None,
    shape: Shape = Shape(),
) -> Layout:
    """Give every rank its role.

    ``rank_nodes[r]`` is the index in ``nodes`` of rank r's node; nodes are in the
    order of their first rank, so ``nodes[0]`` holds the scheduler.  Each node's
    worker ranks take its GPUs in order; ranks beyond them idle, and a node with
    no GPU runs CPU workers on all of its worker ranks.  ``joining``: the job
    joins a running cluster (--join): every rank may work, and each worker's name
    ends with ``-joining``, apart from the first job's.  ``shape``: where the
    driver and workers run (Shape); workers beside another role take the first
    GPUs of their node.
    """
    beside: list[Role] = []
    if joining is None:
        if len(rank_nodes) < shape.min_world_size:
            raise LaunchError(world_too_small(len(rank_nodes), shape))
        roles = {SCHEDULER_RANK: Role(SCHEDULER_RANK, "scheduler",
                                      nodes[rank_nodes[SCHEDULER_RANK]].host)}
        if shape.driver_rank != SCHEDULER_RANK:
            roles[DRIVER_RANK] = Role(DRIVER_RANK, "driver", nodes[rank_nodes[DRIVER_RANK]].host)
        first_worker, fits = shape.driver_rank + 1, fitting_ranks(nodes)
        if not shape.exclusive_workers:
            first_worker = 0
    else:
        roles = {}
        first_worker, fits = 0, f"-np {sum(len(node.gpus) for node in nodes)}"
    notes = []
    for node, ranks in zip(nodes, worker_ranks(rank_nodes, len(nodes), first_worker),
                           strict=True):
        gpus: Sequence[str | None] = node.gpus or [None] * len(ranks)
        placed = list(zip(ranks, gpus, strict=False))  # extra ranks idle
        threads = nthreads or (1 if node.gpus else max(1, node.cores // max(1, len(placed))))
        memory = node.memory // max(1, len(placed)) if memory_limit == "auto" else memory_limit
        for i, (rank, gpu) in enumerate(placed):
            name = worker_name(node.host, gpu, i) + (f"-{joining}" if joining else "")
            worker = Role(rank, "worker", node.host, name, gpu, threads, memory, node.pin)
            if rank in roles:
                beside.append(worker)
            else:
                roles[rank] = worker
        idle = [rank for rank in ranks[len(placed):] if rank not in roles]
        for rank in idle:
            roles[rank] = Role(rank, "idle", node.host)
        if idle:
            notes.append(
                f"{len(idle)} rank(s) on {node.host} have no GPU left and stay idle "
                f"(ranks {format_ranks(idle)}); {fits} fits"
            )
        unused = node.gpus[len(placed):]
        if unused:
            notes.append(
                f"{len(unused)} GPU(s) of {node.host} get no worker ({', '.join(unused)}); "
                f"{fits} gives each one"
            )
    return Layout(tuple(roles[r] for r in range(len(rank_nodes))), tuple(notes),
                  shape.driver_rank, tuple(beside))


def assign_local_roles(
    node: Node,
    cpu_split: tuple[int, int],
    *,
    nthreads: int | None = None,
    memory_limit: str = "auto",
) -> Layout:
    """The same layout for a cluster on this node alone: one worker per GPU, else
    ``cpu_split`` (workers, threads each), the split Dask's LocalCluster chooses."""
    count, threads = (len(node.gpus), 1) if node.gpus else cpu_split
    ranks = [0] * (DRIVER_RANK + 1 + count)
    return assign_roles(ranks, [node], nthreads=nthreads or threads, memory_limit=memory_limit)


def describe_layout(layout: Layout) -> list[str]:
    """One line per node: which ranks do what, on which GPUs."""
    lines = []
    by_host: dict[str, list[Role]] = {}
    for role in layout.roles:
        by_host.setdefault(role.host, []).append(role)
    for host, roles in by_host.items():
        parts = [
            f"rank {r.rank} {r.kind}" + (" and driver" if r.rank == layout.driver_rank
                                         and r.kind == "scheduler" else "")
            for r in roles if r.kind in ("scheduler", "driver")
        ]
        workers = sorted([r for r in roles if r.kind == "worker"]
                         + [r for r in layout.beside if r.host == host], key=lambda r: r.rank)
        if workers:
            where = (
                f"GPU(s) {', '.join(str(r.gpu) for r in workers)} ({workers[0].pin})"
                if workers[0].gpu is not None else "CPU"
            )
            parts.append(f"rank(s) {format_ranks(r.rank for r in workers)} workers on {where}")
        idle = [r.rank for r in roles if r.kind == "idle"]
        if idle:
            parts.append(f"rank(s) {format_ranks(idle)} idle")
        lines.append(f"{host}: {'; '.join(parts)}")
    return lines


def worker_ranks(
    rank_nodes: Sequence[int], node_count: int, first: int = DRIVER_RANK + 1
) -> list[list[int]]:
    """Each node's ranks from ``first`` on (after the driver's), in order: the
    ranks that may work."""
    ranks: list[list[int]] = [[] for _ in range(node_count)]
    for rank in range(first, len(rank_nodes)):
        ranks[rank_nodes[rank]].append(rank)
    return ranks


def block_placement(ranks: int, nodes: int) -> list[int]:
    """The node of each rank as launchers place them with a fixed count per
    node (-npernode, -ppn, --ntasks-per-node): in blocks, in order."""
    per_node = math.ceil(ranks / nodes)
    return [rank // per_node for rank in range(ranks)]  # per_node * nodes >= ranks
