#!/usr/bin/env python
"""Start a Dask cluster under MPI, one worker per GPU, and run a script on it.

    mpirun -np N python start_daskmpi.py [options] script.py [script args ...]

Rank 0 runs the scheduler and its dashboard, rank 1 runs the script as
``__main__`` with a client connected to the cluster (or, with no script,
JupyterLab until 'stop' is typed), and every other rank runs one worker, behind
a nanny, pinned to one GPU of its node.  Run without mpirun, the same cluster
is started locally, in this process and its children.

Ranks talk over MPI only at the start (the layout, the scheduler's address) and
at the end (the driver's exit status); everything between goes through Dask.

Importing this module has no side effects: MPI is initialised in ``main`` only,
because nanny-spawned workers re-import the main module and tests import the
pure functions below.
"""
from __future__ import annotations

import argparse
import asyncio
import contextlib
import ctypes
import datetime
import errno
import functools
import getpass
import importlib.util
import json
import logging
import math
import os
import re
import runpy
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import traceback
import urllib.request
from collections.abc import Awaitable, Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import dask
import psutil
from dask.system import CPU_COUNT
from dask.utils import parse_bytes, parse_timedelta
from distributed import Client, Nanny, Scheduler, Security, SpecCluster, Worker
from distributed.comm.addressing import parse_host_port
from distributed.core import rpc
from distributed.system import MEMORY_LIMIT
from distributed.utils import get_ip_interface

logger = logging.getLogger("start_daskmpi")

SCHEDULER_RANK = 0
DRIVER_RANK = 1
MIN_WORLD_SIZE = 3
DEFAULT_SCHEDULER_PORT = 8786
DEFAULT_DASHBOARD_ADDRESS = "127.0.0.1:8787"
DEFAULT_JUPYTER_PORT = 7787
PORT_SEARCH_SPAN = 100
TAG_START = 1
TAG_END = 2
FAILURES_TOPIC = "start_daskmpi-failures"  # scheduler event topic for workers that failed to start
CONTROL_TOPIC = "start_daskmpi-control"  # scheduler event topic for "stop", typed where stdin is
POLL_INTERVAL = 0.05  # seconds between tests of a pending MPI message
STARTUP_MARGIN = 10.0  # seconds a worker keeps trying to start after the driver gave up
WORKERS_LEAVE_TIMEOUT = 10.0  # seconds the scheduler waits at the end for workers to close
SIGNAL_GRACE = 8.0  # seconds a rank waits, after SIGINT or SIGTERM, for the driver to end the job
SCHEDULER_LOST_GRACE = 5.0  # seconds the driver's client may be without its scheduler
LEAVE_TIMEOUT = 30.0  # seconds a rank done with its role waits for the others to be done
PORT_RACE_ATTEMPTS = 5  # starts of the scheduler on the next free port, when another took it
JUPYTER_START_TIMEOUT = 120.0
JUPYTER_STOP_TIMEOUT = 10.0
LOG_FILE_VARIABLE = "START_DASKMPI_LOG_FILE"
VERBOSE_VARIABLE = "START_DASKMPI_VERBOSE"

# Where a batch system keeps the job id, which names the run's log folder.
JOB_ID_VARIABLES = ("COBALT_JOBID", "PBS_JOBID", "SLURM_JOB_ID", "LSB_JOBID", "FLUX_JOB_ID")
# What each MPI launcher tells its processes: world size and rank.
LAUNCHER_VARIABLES = (
    ("OMPI_COMM_WORLD_SIZE", "OMPI_COMM_WORLD_RANK"),
    ("PMI_SIZE", "PMI_RANK"),
    ("MV2_COMM_WORLD_SIZE", "MV2_COMM_WORLD_RANK"),
    ("SLURM_STEP_NUM_TASKS", "SLURM_PROCID"),
)
# Node-local scratch on the machines we know, tried after $TMPDIR and before /tmp.
NODE_SCRATCH = ("/local/scratch", "/raid/scratch")
# The PEM fields of a distributed.Security: one job's CA, certificates and keys.
TLS_FIELDS = (
    "tls_ca_file", "tls_client_key", "tls_client_cert", "tls_scheduler_key",
    "tls_scheduler_cert", "tls_worker_key", "tls_worker_cert",
)


class LaunchError(Exception):
    """A problem the user can fix; its message says how, in one line."""


class Terminated(KeyboardInterrupt):
    """SIGTERM (a walltime, a kill), raised in the driver as Ctrl-C raises
    KeyboardInterrupt, so that the script's ``finally`` blocks run."""


class SchedulerLost(KeyboardInterrupt):
    """Raised in the driver, as a signal is, once its scheduler has gone for good."""


def raise_terminated(signum: int, frame: Any) -> None:
    raise Terminated


def announce_interrupt(error: KeyboardInterrupt) -> int:
    """Say what ended the run; return 128 + the signal, as a shell reports it."""
    if isinstance(error, SchedulerLost):
        report(str(error))
        return 1
    signum = signal.SIGTERM if isinstance(error, Terminated) else signal.SIGINT
    print(f"\nInterrupted ({signum.name}): stopping Dask", flush=True)
    return 128 + signum


# --------------------------------------------------------------------------
# Options
# --------------------------------------------------------------------------


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # argparse would print usage and exit on every rank
        raise LaunchError(f"{message} (see --help)")


def _integer(low: int, high: int, expected: str) -> Callable[[str], int]:
    def convert(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            value = low - 1
        if not low <= value <= high:
            raise argparse.ArgumentTypeError(f"expected {expected}, got {text!r}")
        return value

    return convert


_positive_int = _integer(1, sys.maxsize, "a positive integer")
_count = _integer(0, sys.maxsize, "0 or more")
_port = _integer(0, 65535, "a port number, 0-65535")


def _seconds(text: str) -> float:
    try:
        value = parse_timedelta(text, default="seconds")
    except (ValueError, KeyError):  # KeyError: dask's word for an unknown unit
        value = 0
    if value <= 0:
        raise argparse.ArgumentTypeError(f"expected a duration such as 60, 90s or 2m, got {text!r}")
    return value


def _memory_limit(text: str) -> str:
    """What Dask's memory_limit takes: 'auto', a fraction or count, or bytes like 80GB."""
    try:
        if text == "auto" or float(text) >= 0:
            return text
    except ValueError:
        with contextlib.suppress(ValueError):
            parse_bytes(text)
            return text
    raise argparse.ArgumentTypeError(
        f"expected bytes such as 80GB, a fraction such as 0.5, auto or 0, got {text!r}"
    )


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="start_daskmpi.py",
        description=(
            "Start a Dask cluster with MPI (rank 0: scheduler and dashboard, rank 1: "
            "your script, every other rank: one worker per GPU) and run SCRIPT, or "
            "JupyterLab, on it. Without mpirun, a local cluster of the same shape does."
        ),
        epilog=(
            "Ranks needed: the node's GPUs + 2 on the first node, its GPUs on the others "
            "(e.g. mpirun -np 10 for one node of 8 GPUs). Dask's config files and DASK_* "
            "variables apply as usual."
        ),
    )
    parser.add_argument(
        "script", nargs="?",
        help="Python script to run on the cluster; without one, JupyterLab runs on it "
        "until you type 'stop'",
    )
    parser.add_argument(
        "script_args", nargs=argparse.REMAINDER, metavar="...", help="arguments for SCRIPT"
    )
    worker = parser.add_argument_group("workers")
    worker.add_argument(
        "--nthreads", type=_positive_int, metavar="N",
        help="threads per worker (default: 1 per GPU worker; CPU workers share the node's cores)",
    )
    worker.add_argument(
        "--memory-limit", type=_memory_limit, default="auto", metavar="LIMIT",
        help="memory per worker: bytes (80GB), a fraction of the node, 0 for none, "
        "or auto: the node's memory shared among its workers (default)",
    )
    worker.add_argument(
        "--local-directory", metavar="DIR",
        help="node-local scratch for spilling (default: first writable of $TMPDIR, "
        f"the site's scratch, {', '.join(NODE_SCRATCH)}, /tmp)",
    )
    worker.add_argument(
        "--nanny", action=argparse.BooleanOptionalAction, default=True,
        help="under mpirun, run each worker behind a nanny that restarts it if it dies "
        "(default); --no-nanny runs it in its rank's process: a faster start, but a dead "
        "worker ends the job",
    )
    worker.add_argument(
        "--gpus-per-node", type=_count, metavar="N",
        help="use this many GPUs per node instead of detecting them (0: CPU workers only)",
    )
    worker.add_argument(
        "--rmm-pool-size", metavar="SIZE",
        help="GPU workers allocate from an RMM pool of this size, e.g. 70GB or 0.9 of "
        "the GPU (dask-cuda and rmm)",
    )
    worker.add_argument(
        "--device-memory-limit", metavar="LIMIT",
        help="GPU memory a worker fills before it spills to host memory, then disk, "
        "e.g. 60GB or 0.8 (dask-cuda; default: dask-cuda's)",
    )
    worker.add_argument(
        "--gpu-vendor", choices=sorted(VENDORS),
        help="whose GPUs to pin workers to, by CUDA_VISIBLE_DEVICES (nvidia), "
        "ROCR_VISIBLE_DEVICES (amd) or ZE_AFFINITY_MASK (intel) (default: the maker whose "
        "mask the batch system set, else whose GPUs are found)",
    )
    worker.add_argument(
        "--require-gpu", action="store_true",
        help="fail at once, rather than run CPU workers, where a node has no GPU or no CuPy",
    )
    net = parser.add_argument_group("network")
    net.add_argument(
        "--interface", metavar="NAME", help="network interface to use, e.g. ib0, hsn0, lo"
    )
    net.add_argument(
        "--tls", action=argparse.BooleanOptionalAction, default=True,
        help="encrypt and authenticate every connection with a certificate made for this "
        "job and shared over MPI (default): only your processes can use the cluster. "
        "--no-tls for UCX or debugging, on a machine where you trust everyone",
    )
    net.add_argument(
        "--protocol", metavar="NAME",
        help="Dask comm protocol with --no-tls, e.g. tcp or ucx (with TLS: tls)",
    )
    net.add_argument(
        "--scheduler-port", type=_port, metavar="PORT",
        help=f"scheduler port (default {DEFAULT_SCHEDULER_PORT}, or the next free one)",
    )
    net.add_argument(
        "--dashboard-address", metavar="[HOST]:PORT",
        help=f"dashboard [host]:port (default {DEFAULT_DASHBOARD_ADDRESS}, "
        "or the next free port; the SSH tunnel reaches localhost)",
    )
    net.add_argument(
        "--jupyter-port", type=_port, metavar="PORT",
        help=f"JupyterLab's port, with no script (default {DEFAULT_JUPYTER_PORT}, or the next "
        "free one); JupyterLab listens on 127.0.0.1 only",
    )
    net.add_argument(
        "--ssh-hops", metavar="HOPS",
        help="comma-separated SSH hops from your machine to the compute node, for the "
        "printed tunnel command (default: the site's login chain, or USER@this host)",
    )
    run = parser.add_argument_group("run")
    run.add_argument(
        "--scheduler-file", metavar="FILE",
        help="write the scheduler's address here, for other clients",
    )
    run.add_argument(
        "--log-dir", type=Path, metavar="DIR",
        help="folder for per-rank logs (default: ~/dask_logs/<job id or timestamp>)",
    )
    run.add_argument(
        "--startup-timeout", type=_seconds, default=120.0, metavar="SECONDS",
        help="seconds to wait for every worker to register (default 120)",
    )
    run.add_argument("-v", "--verbose", action="store_true", help="show Dask's INFO logs here too")
    plan = parser.add_argument_group(
        "plan", "print which rank does what, and the launch line that fits, without MPI"
    )
    plan.add_argument("--plan", action="store_true", help="print the layout plan and exit")
    plan.add_argument("--nodes", type=_positive_int, default=1, metavar="N",
                      help="nodes in the job (default 1)")
    plan.add_argument("-np", "--ranks", type=_positive_int, metavar="N",
                      help="ranks mpirun would start (default: the count that fits)")
    return parser


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """Parse the command line; raise LaunchError with one line for a bad one."""
    args = build_parser().parse_args(argv)
    if not args.plan and (args.ranks or args.nodes != 1):
        raise LaunchError("-np and --nodes describe a job for --plan: add --plan, or drop them")
    if args.tls and args.protocol not in (None, "tls"):
        raise LaunchError(
            f"--protocol {args.protocol} carries no TLS: add --no-tls to use it (see --help)"
        )
    return args


# --------------------------------------------------------------------------
# Layout: which rank does what, on which GPU
# --------------------------------------------------------------------------


@dataclass(frozen=True)
class Node:
    """What a node offers, as its first rank found it."""

    host: str
    gpus: tuple[str, ...]  # entries of the GPU mask (CUDA_VISIBLE_DEVICES...), one per GPU
    cores: int
    memory: int  # bytes
    pin: str = "CUDA_VISIBLE_DEVICES"  # the variable that gives a process its GPUs


@dataclass(frozen=True)
class Role:
    rank: int
    kind: str  # "scheduler", "driver", "worker" or "idle"
    host: str
    name: str | None = None
    gpu: str | None = None
    nthreads: int = 0
    memory_limit: int | str = 0
    pin: str = "CUDA_VISIBLE_DEVICES"

    def environment(self) -> dict[str, str]:
        """What pins this role's process to its GPU, set before anything touches it."""
        return {} if self.gpu is None else {self.pin: self.gpu}


@dataclass(frozen=True)
class Layout:
    roles: tuple[Role, ...]
    notes: tuple[str, ...] = ()

    @property
    def workers(self) -> list[Role]:
        return [role for role in self.roles if role.kind == "worker"]


def world_too_small(size: int) -> str:
    return (
        f"needs at least {MIN_WORLD_SIZE} ranks: one for the scheduler, one for your "
        f"script and one per worker (got {size}); use e.g. mpirun -np {MIN_WORLD_SIZE}, "
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


def plan_layout(
    rank_nodes: Sequence[int],
    nodes: Sequence[Node],
    *,
    nthreads: int | None = None,
    memory_limit: str = "auto",
) -> Layout:
    """Give every rank its role.

    ``rank_nodes[r]`` is the index in ``nodes`` of rank r's node; nodes are in the
    order of their first rank, so ``nodes[0]`` holds the scheduler.  Each node's
    worker ranks take its GPUs in order; ranks beyond them idle, and a node with
    no GPU runs CPU workers on all of its worker ranks.
    """
    if len(rank_nodes) < MIN_WORLD_SIZE:
        raise LaunchError(world_too_small(len(rank_nodes)))
    roles = {
        SCHEDULER_RANK: Role(SCHEDULER_RANK, "scheduler", nodes[rank_nodes[SCHEDULER_RANK]].host),
        DRIVER_RANK: Role(DRIVER_RANK, "driver", nodes[rank_nodes[DRIVER_RANK]].host),
    }
    notes = []
    for index, node in enumerate(nodes):
        ranks = [r for r in range(DRIVER_RANK + 1, len(rank_nodes)) if rank_nodes[r] == index]
        gpus: Sequence[str | None] = node.gpus or [None] * len(ranks)
        placed = list(zip(ranks, gpus, strict=False))  # extra ranks idle
        threads = nthreads or (1 if node.gpus else max(1, node.cores // max(1, len(placed))))
        memory = node.memory // max(1, len(placed)) if memory_limit == "auto" else memory_limit
        for i, (rank, gpu) in enumerate(placed):
            name = worker_name(node.host, gpu, i)
            roles[rank] = Role(rank, "worker", node.host, name, gpu, threads, memory, node.pin)
        idle = ranks[len(placed):]
        for rank in idle:
            roles[rank] = Role(rank, "idle", node.host)
        if idle:
            notes.append(
                f"{len(idle)} rank(s) on {node.host} have no GPU left and stay idle "
                f"(ranks {format_ranks(idle)}); {fitting_ranks(nodes)} fits"
            )
        unused = node.gpus[len(placed):]
        if unused:
            notes.append(
                f"{len(unused)} GPU(s) of {node.host} get no worker ({', '.join(unused)}); "
                f"{fitting_ranks(nodes)} gives each one"
            )
    return Layout(tuple(roles[r] for r in range(len(rank_nodes))), tuple(notes))


def plan_local(node: Node, *, nthreads: int | None = None, memory_limit: str = "auto") -> Layout:
    """The same layout for a cluster in this process: one worker per GPU, else
    the CPU split that Dask's LocalCluster would choose."""
    from distributed.deploy.utils import nprocesses_nthreads

    count, threads = (len(node.gpus), 1) if node.gpus else nprocesses_nthreads(node.cores)
    ranks = [0] * (DRIVER_RANK + 1 + count)
    return plan_layout(
        ranks, [node], nthreads=nthreads or threads, memory_limit=memory_limit
    )


def describe_layout(layout: Layout) -> list[str]:
    """One line per node: which ranks do what, on which GPUs."""
    lines = []
    for host in dict.fromkeys(role.host for role in layout.roles):
        roles = [role for role in layout.roles if role.host == host]
        parts = [f"rank {r.rank} {r.kind}" for r in roles if r.kind in ("scheduler", "driver")]
        workers = [r for r in roles if r.kind == "worker"]
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


def block_placement(ranks: int, nodes: int) -> list[int]:
    """The node of each rank as launchers place them with a fixed count per
    node (-npernode, -ppn, --ntasks-per-node): in blocks, in order."""
    per_node = math.ceil(ranks / nodes)
    return [min(rank // per_node, nodes - 1) for rank in range(ranks)]


def launch_lines(nodes: int, per_node: int, script: str) -> dict[str, str]:
    """The launch line of each kind of launcher for ``per_node`` ranks on each node."""
    total = nodes * per_node
    command = f"python start_daskmpi.py {script}"
    hosts = " --hostfile $NODEFILE" if nodes > 1 else ""
    return {
        "Open MPI (Cobalt)": f"mpirun -np {total} -npernode {per_node}{hosts} {command}",
        "MPICH, Cray (PBS)": f"mpiexec -n {total} --ppn {per_node}{hosts} {command}",
        "Slurm": f"srun -n {total} --ntasks-per-node {per_node} {command}",
    }


def plan_report(args: argparse.Namespace, node: Node) -> str:
    """--plan: the layout of ``args.nodes`` nodes like ``node``, and how to launch it.
    Launchers place the same count on every node, so without -np the plan takes
    the GPUs + 2 a node that the launch lines give (2 idle on the other nodes)."""
    nodes = [replace(node, host=f"node{i}") for i in range(args.nodes)]
    if node.gpus:
        per_node = len(node.gpus) + 2
        heading = f"Launch lines that give every GPU a worker ({per_node} ranks a node):"
    else:
        per_node = max(MIN_WORLD_SIZE, math.ceil((args.ranks or 0) / args.nodes))
        heading = f"Launch lines for {per_node} ranks a node:"
    ranks = args.ranks or args.nodes * per_node
    layout = plan_layout(block_placement(ranks, args.nodes), nodes)
    gpus = f"{len(node.gpus)} GPU(s)" if node.gpus else "no GPU (CPU workers)"
    lines = [f"{ranks} ranks on {args.nodes} node(s) of {gpus}, placed in blocks:"]
    lines += [f"    {line}" for line in describe_layout(layout)]
    lines += [f"    note: {note}" for note in layout.notes]
    lines.append(heading)
    script = " ".join([args.script, *args.script_args]) if args.script else "your_script.py"
    lines += [
        f"    {name}: {line}"
        for name, line in launch_lines(args.nodes, per_node, script).items()
    ]
    return "\n".join(lines)


# --------------------------------------------------------------------------
# GPUs
# --------------------------------------------------------------------------


@dataclass(frozen=True)
class Vendor:
    """How a GPU maker's runtime is told which GPUs a process may use."""

    name: str
    masks: tuple[str, ...]  # variables a batch system may have set, read in this order


VENDORS = {
    "nvidia": Vendor("nvidia", ("CUDA_VISIBLE_DEVICES",)),
    "amd": Vendor("amd", ("ROCR_VISIBLE_DEVICES", "HIP_VISIBLE_DEVICES")),
    "intel": Vendor("intel", ("ZE_AFFINITY_MASK",)),
}
# PCI device ids of Intel's data-centre GPUs (Max, Flex), not of integrated graphics.
INTEL_DATA_CENTRE_GPUS = ("0x0bd", "0x56c")


def parse_visible_devices(value: str) -> list[str]:
    """Mask entries (indices, UUIDs, Intel's card.tile); '' and 'NoDevFiles' mean none."""
    if value.strip() == "NoDevFiles":
        return []
    return [entry.strip() for entry in value.split(",") if entry.strip()]


def choose_gpus(
    visible: str | None,
    detected: int,
    override: int | None,
    host: str = "this node",
    variable: str = "CUDA_VISIBLE_DEVICES",
) -> tuple[str, ...]:
    """The GPUs a node's workers use: the batch system's mask ``variable`` when
    it set one (its entries, not raw indices), else the detected ones;
    --gpus-per-node takes the first N, or simulates N where no GPU can be seen."""
    if visible is not None:
        devices, source = parse_visible_devices(visible), f"{variable}={visible}"
    else:
        devices, source = [str(i) for i in range(detected)], "detected"
    if override is None or override <= len(devices):
        return tuple(devices[:override])
    if visible is None and detected == 0:
        return tuple(str(i) for i in range(override))
    raise LaunchError(
        f"--gpus-per-node {override}, but {host} has {len(devices)} GPU(s) ({source}): "
        f"use --gpus-per-node {len(devices)} or fewer"
    )


def count_gpus_nvml() -> int:
    import pynvml

    pynvml.nvmlInit()
    try:
        return pynvml.nvmlDeviceGetCount()
    finally:
        pynvml.nvmlShutdown()


def count_gpus_nvidia_smi() -> int:
    done = subprocess.run(
        ["nvidia-smi", "-L"], capture_output=True, text=True, timeout=30, check=True
    )
    return sum(line.startswith("GPU ") for line in done.stdout.splitlines())


def count_gpus() -> int:
    """NVIDIA GPUs on this node, by NVML or nvidia-smi: neither creates a CUDA context."""
    for counter in (count_gpus_nvml, count_gpus_nvidia_smi):
        try:
            return counter()
        except Exception:
            continue
    return 0


def count_gpus_amd(topology: Path = Path("/sys/class/kfd/kfd/topology/nodes")) -> int:
    """AMD GPUs, as the ROCm kernel driver lists its agents (a CPU has no SIMDs)."""
    return sum(
        bool(re.search(r"^simd_count\s+[1-9]", path.read_text(), re.MULTILINE))
        for path in topology.glob("*/properties")
    )


def count_gpus_intel(drm: Path = Path("/sys/class/drm")) -> int:
    """Intel data-centre GPUs, by their PCI ids (integrated graphics do not count)."""
    count = 0
    for card in drm.glob("card[0-9]*"):
        if "-" in card.name:  # a connector (card0-DP-1), not a card
            continue
        with contextlib.suppress(OSError):
            vendor = (card / "device" / "vendor").read_text().strip()
            device = (card / "device" / "device").read_text().strip()
            count += vendor == "0x8086" and device.startswith(INTEL_DATA_CENTRE_GPUS)
    return count


GPU_COUNTERS: dict[str, Callable[[], int]] = {
    "nvidia": count_gpus, "amd": count_gpus_amd, "intel": count_gpus_intel,
}


def find_gpus(
    vendor_option: str | None,
    environ: Mapping[str, str],
    counters: Mapping[str, Callable[[], int]] = GPU_COUNTERS,
) -> tuple[str, str | None, int]:
    """The node's GPUs: (the variable that pins them, the mask the batch system
    set in it or None, the number detected when no mask says).  The maker is
    --gpu-vendor's, else the one whose mask is set, else the first whose GPUs
    are found; none found: NVIDIA's variable, and no GPU."""
    makers = [VENDORS[vendor_option]] if vendor_option else list(VENDORS.values())
    for vendor in makers:
        for variable in vendor.masks:
            if variable in environ:
                return variable, environ[variable], 0
    for vendor in makers:
        found = counters[vendor.name]()
        if found or vendor_option:
            return vendor.masks[0], None, found
    return VENDORS["nvidia"].masks[0], None, 0


def check_gpu_required(host: str, real_gpus: int, chosen_gpus: int, has_cupy: bool) -> None:
    """--require-gpu: a node without a GPU (or CuPy) is an error, not a CPU fallback."""
    if real_gpus == 0:
        raise LaunchError(
            f"--require-gpu, but {host} has no GPU (no mask set, none found by NVML, "
            "nvidia-smi, ROCm or Intel's driver): run on a GPU node, or leave "
            "--require-gpu out for CPU workers"
        )
    if chosen_gpus == 0:
        raise LaunchError("--require-gpu and --gpus-per-node 0 contradict: drop one")
    if not has_cupy:
        raise LaunchError(
            f"--require-gpu, but CuPy is not installed on {host}: "
            "pip install 'start-daskmpi[gpu]'"
        )


def this_node(
    gpus_per_node: int | None,
    require_gpu: bool = False,
    vendor: str | None = None,
    environ: Mapping[str, str] = os.environ,
) -> Node:
    looking = gpus_per_node != 0 or require_gpu
    counters = GPU_COUNTERS if looking else dict.fromkeys(GPU_COUNTERS, lambda: 0)
    pin, visible, detected = find_gpus(vendor, environ, counters)
    host = socket.gethostname().split(".")[0]
    gpus = choose_gpus(visible, detected, gpus_per_node, host, pin)
    if require_gpu:
        real = detected if visible is None else len(parse_visible_devices(visible))
        check_gpu_required(host, real, len(gpus), importlib.util.find_spec("cupy") is not None)
    return Node(host=host, gpus=gpus, cores=CPU_COUNT, memory=MEMORY_LIMIT, pin=pin)


# --------------------------------------------------------------------------
# Places: ports, folders, tunnels
# --------------------------------------------------------------------------


def port_is_free(host: str, port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        # Tornado binds with SO_REUSEADDR, so a port in TIME_WAIT is free to it too.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return False
    return True


def choose_port(
    requested: int | None,
    default: int,
    is_free: Callable[[int], bool],
    option: str,
) -> int:
    """An explicit port must be free; a default one that is taken (another user
    on a shared node) gives way to the next free port above it, else any."""
    if requested is not None:
        if requested and not is_free(requested):
            raise LaunchError(
                f"port {requested} of {option} is already in use on this node: "
                f"choose another, or leave {option} out to take a free one"
            )
        return requested
    for port in range(default, min(default + PORT_SEARCH_SPAN, 65536)):
        if is_free(port):
            return port
    return 0


def listen_host(interface: str | None, local: bool) -> str:
    """The host the scheduler binds: the interface's address, else loopback for
    a local cluster (as LocalCluster does) and all addresses under MPI."""
    if interface:
        return get_ip_interface(interface)
    return "127.0.0.1" if local else ""


def dashboard_address(requested: str | None, is_free: Callable[[str, int], bool]) -> str:
    host, port = parse_host_port(requested or DEFAULT_DASHBOARD_ADDRESS)
    requested_port = port if requested is not None else None
    chosen = choose_port(
        requested_port, port, lambda p: is_free(host, p), "--dashboard-address"
    )
    return f"{host}:{chosen}"


def is_writable_dir(path: str) -> bool:
    return os.path.isdir(path) and os.access(path, os.W_OK | os.X_OK)


def default_local_directory(
    environ: Mapping[str, str],
    site: Site | None = None,
    is_writable: Callable[[str], bool] = is_writable_dir,
) -> str:
    """Node-local scratch for spilling: $TMPDIR (batch systems point it at the
    node's own disk), the site's scratch, the usual places, /tmp."""
    user = environ.get("USER", "")
    scratch = [path.format(user=user) for path in site.scratch] if site else []
    candidates = [environ.get("TMPDIR", ""), *scratch, *NODE_SCRATCH, "/tmp"]
    return next((path for path in candidates if path and is_writable(path)), "/tmp")


def default_log_dir(environ: Mapping[str, str], home: Path, now: datetime.datetime) -> Path:
    job = next((environ[v] for v in JOB_ID_VARIABLES if environ.get(v)), None)
    name = job.replace("/", "_") if job else now.strftime("%Y%m%d-%H%M%S")
    return home / "dask_logs" / name


def make_log_dir(requested: Path | None) -> Path:
    """Create the run's log folder, user-only: the logs name every address of
    the cluster.  A default folder that exists already (a second run in the
    same job) gets a numbered sibling instead of mixing two runs' logs."""
    if requested is not None:
        path = requested.expanduser()
        try:
            path.mkdir(mode=0o700, parents=True, exist_ok=True)
        except OSError as e:
            raise LaunchError(f"cannot create --log-dir {path}: {e.strerror}") from None
        if not is_writable_dir(str(path)):
            raise LaunchError(f"--log-dir {path} is not writable: choose another folder")
        return path
    base = default_log_dir(os.environ, Path.home(), datetime.datetime.now())
    for attempt in range(1000):
        path = base if attempt == 0 else base.with_name(f"{base.name}.{attempt}")
        try:
            path.mkdir(mode=0o700, parents=True)
            return path
        except FileExistsError:
            continue
        except OSError as e:
            raise LaunchError(
                f"cannot create the log folder {path}: {e.strerror}; use --log-dir"
            ) from None
    raise LaunchError(f"too many log folders named {base}.*: clean them up or use --log-dir")


@dataclass(frozen=True)
class Site:
    """A machine we know: how to reach its compute nodes from a laptop, and its
    node-local scratch.  ``{user}`` in a hop is the user's name."""

    name: str
    pattern: str  # matched against the node's fully qualified name
    hops: tuple[str, ...]  # login hops before the compute node
    scratch: tuple[str, ...] = ()


SITES = (
    Site("ThetaGPU", r"^thetagpu\d+", ("{user}@theta.alcf.anl.gov", "thetagpusn1"),
         ("/raid/scratch",)),
    Site("Polaris", r"\.polaris\.alcf\.anl\.gov$|^x3\d{3}c\d+s\d+b\d+n\d+",
         ("{user}@polaris.alcf.anl.gov",), ("/local/scratch",)),
    Site("Aurora", r"\.aurora\.alcf\.anl\.gov$|^x4\d{3}c\d+s\d+b\d+n\d+",
         ("{user}@aurora.alcf.anl.gov",), ("/tmp",)),
    Site("Perlmutter", r"\.perlmutter\.nersc\.gov$|^nid\d{6}",
         ("{user}@perlmutter.nersc.gov",), ("/tmp",)),
    Site("Frontier", r"^frontier\d{5}", ("{user}@frontier.olcf.ornl.gov",),
         ("/mnt/bb/{user}", "/tmp")),
)


def site_of(host: str, fqdn: str) -> Site | None:
    return next(
        (site for site in SITES if re.search(site.pattern, fqdn) or re.search(site.pattern, host)),
        None,
    )


def default_ssh_hops(host: str, fqdn: str, user: str) -> list[str]:
    """The SSH route from a laptop to ``host``: the site's login hops where we
    know the site, else straight to this node."""
    site = site_of(host, fqdn)
    if site is None:
        return [f"{user}@{fqdn}"]
    return [hop.format(user=user) for hop in site.hops] + [host]


def ssh_route(hops_option: str | None, host: str, fqdn: str, user: str) -> list[str]:
    if hops_option:
        return [hop.strip() for hop in hops_option.split(",") if hop.strip()] + [host]
    return default_ssh_hops(host, fqdn, user)


def ssh_tunnel_command(route: Sequence[str], ports: Sequence[int]) -> str:
    """Nested ssh that forwards each port through every hop to the node's localhost."""
    forwards = " ".join(f"-L {port}:localhost:{port}" for port in ports)
    return " ".join(f"ssh -t {forwards} {hop}" for hop in route)


def ssh_jump_command(route: Sequence[str], ports: Sequence[int]) -> str:
    """The same tunnel in one ssh, through the hops as jump hosts."""
    forwards = " ".join(f"-L {port}:localhost:{port}" for port in ports)
    jumps = f"-J {','.join(route[:-1])} " if len(route) > 1 else ""
    return f"ssh {jumps}{forwards} {route[-1]}"


def jupyter_banner(
    route: Sequence[str], jupyter_port: int, dashboard_port: int | None, token: str, log: Path
) -> str:
    ports = [jupyter_port] + ([dashboard_port] if dashboard_port is not None else [])
    lines = [
        "To connect to JupyterLab and Dask dashboard, execute the following command in a "
        "shell on your local machine:",
        f"    {ssh_tunnel_command(route, ports)}",
    ]
    if len(route) > 1:
        lines.append(f"    (or, one command: {ssh_jump_command(route, ports)})")
    lines += [
        "",
        f"To open JupyterLab, go to (see log file {log}):",
        f"    http://localhost:{jupyter_port}/lab?token={token}",
    ]
    if dashboard_port is not None:
        lines += [
            "",
            "To open the Dask dashboard, go to:",
            f"    http://localhost:{dashboard_port}/status      (also inside JupyterLab: "
            f"http://localhost:{jupyter_port}/proxy/{dashboard_port}/status)",
        ]
    return "\n".join(lines)


@dataclass(frozen=True)
class SchedulerInfo:
    """What rank 0 tells the others once the scheduler listens."""

    address: str
    host: str
    fqdn: str
    dashboard_port: int | None


def connection_banner(info: SchedulerInfo, route: Sequence[str]) -> str:
    if info.dashboard_port is None:
        return "The Dask dashboard is off (install bokeh to get it)."
    port = info.dashboard_port
    return (
        "To connect to the Dask dashboard, execute the following command in a shell "
        "on your local machine:\n"
        f"    {ssh_tunnel_command(route, [port])}\n"
        "To open the Dask dashboard, go to:\n"
        f"    http://localhost:{port}/status"
    )


# --------------------------------------------------------------------------
# Logging
# --------------------------------------------------------------------------


class OneLineFormatter(logging.Formatter):
    """A record in one line: its traceback stays in the log file, named instead."""

    def __init__(self, fmt: str, log_file: str | Path) -> None:
        super().__init__(fmt)
        self.log_file = log_file

    def format(self, record: logging.LogRecord) -> str:
        bare = logging.makeLogRecord(
            {**record.__dict__, "exc_info": None, "exc_text": None, "stack_info": None}
        )
        line = super().format(bare)
        return f"{line} (traceback in {self.log_file})" if record.exc_info else line


def log_to_file(path: str | Path, verbose: bool) -> None:
    """INFO and up to ``path``; the terminal gets warnings and errors only, each
    in one line, unless verbose.  Replaces the stderr handlers distributed
    installs at import."""
    log_format = dask.config.get("distributed.admin.log-format")
    to_file = logging.FileHandler(path)
    os.chmod(path, 0o600)
    to_file.setLevel(logging.INFO)
    to_file.setFormatter(logging.Formatter(log_format))
    to_terminal = logging.StreamHandler(sys.stderr)
    to_terminal.setLevel(logging.INFO if verbose else logging.WARNING)
    to_terminal.setFormatter(
        logging.Formatter(log_format) if verbose else OneLineFormatter(log_format, path)
    )
    for existing in logging.Logger.manager.loggerDict.values():
        if isinstance(existing, logging.Logger) and existing.handlers:
            existing.handlers.clear()
            existing.propagate = True
    root = logging.getLogger()
    root.handlers[:] = [to_file, to_terminal]
    root.setLevel(logging.INFO)
    logging.captureWarnings(True)


class NannyWorker(Worker):
    """The worker a nanny spawns: the first code of ours in that process.

    It logs to the file the launcher chose (the process re-imports distributed,
    whose logging goes to stderr), and leaves SIGINT and SIGTERM, which mpirun
    sends its ranks' whole process groups, to the nanny, which closes it in order
    (and would restart it, were it killed by them).
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        path = os.environ.get(LOG_FILE_VARIABLE)
        if path:
            log_to_file(path, verbose=os.environ.get(VERBOSE_VARIABLE) == "1")
        for signum in (signal.SIGINT, signal.SIGTERM):
            signal.signal(signum, signal.SIG_IGN)
        super().__init__(*args, **kwargs)


def report(message: str) -> None:
    print(f"start_daskmpi: error: {message}", file=sys.stderr, flush=True)


# --------------------------------------------------------------------------
# Checks before anything starts
# --------------------------------------------------------------------------


def check_jupyterlab() -> None:
    if importlib.util.find_spec("jupyterlab") is None:
        raise LaunchError(
            "with no script, JupyterLab runs on the cluster, but it is not installed: "
            "pip install 'start-daskmpi[jupyter]', or give a script to run"
        )


def check_script(path: str) -> None:
    if not os.path.exists(path):
        raise LaunchError(f"script not found: {path}")
    if not os.path.isfile(path):
        raise LaunchError(f"not a file: {path}: give the path of a Python script")
    try:
        with open(path, "rb") as f:
            source = f.read()
        if b"\0" in source:
            raise ValueError("binary file")
        compile(source, path, "exec", dont_inherit=True)
    except SyntaxError as e:
        raise LaunchError(f"{path}:{e.lineno}: {e.msg}: fix the script's syntax") from None
    except (ValueError, UnicodeDecodeError):
        raise LaunchError(f"{path} is not a Python script") from None
    except OSError as e:
        raise LaunchError(f"cannot read {path}: {e.strerror}") from None


def check_interface(interface: str | None) -> None:
    if interface and interface not in psutil.net_if_addrs():
        known = ", ".join(sorted(psutil.net_if_addrs()))
        raise LaunchError(
            f"no network interface {interface!r} on {socket.gethostname()} (it has: {known})"
        )


def check_local_directory(path: str) -> None:
    try:
        os.makedirs(path, exist_ok=True)
    except OSError as e:
        raise LaunchError(f"cannot create --local-directory {path}: {e.strerror}") from None
    if not is_writable_dir(path):
        raise LaunchError(f"--local-directory {path} is not writable: choose another folder")


def check_dask_cuda(args: argparse.Namespace, local: bool) -> None:
    wanted = [
        option for option, value in (
            ("--rmm-pool-size", args.rmm_pool_size),
            ("--device-memory-limit", args.device_memory_limit),
        ) if value
    ]
    if not wanted:
        return
    if importlib.util.find_spec("dask_cuda") is None:
        raise LaunchError(f"{wanted[0]} comes from dask-cuda: pip install dask-cuda")
    if args.rmm_pool_size and importlib.util.find_spec("rmm") is None:
        raise LaunchError("--rmm-pool-size needs RMM: pip install rmm-cu12 (or rmm-cu13)")
    if local or not args.nanny:
        raise LaunchError(
            f"{wanted[0]} applies to dask-cuda's workers, which run under mpirun "
            "with a nanny: use mpirun, without --no-nanny"
        )


def preflight(role: Role, args: argparse.Namespace) -> None:
    check_interface(args.interface)
    if role.kind == "driver" and args.script:
        check_script(args.script)
    elif role.kind == "driver":
        check_jupyterlab()
    if role.kind == "worker":
        check_local_directory(local_directory(args))


@functools.cache
def this_site() -> Site | None:
    # getfqdn() may ask DNS: once per process, not once per worker option.
    return site_of(socket.gethostname(), socket.getfqdn())


def local_directory(args: argparse.Namespace) -> str:
    return args.local_directory or default_local_directory(os.environ, this_site())


def attempt(action: Callable[..., Any], *arguments: Any) -> tuple[Any, str | None]:
    """Run ``action``; a LaunchError becomes its message, to send to other ranks."""
    try:
        return action(*arguments), None
    except LaunchError as e:
        return None, str(e)


# --------------------------------------------------------------------------
# Roles
# --------------------------------------------------------------------------


def make_credentials(tls: bool) -> dict[str, str] | None:
    """A CA, certificate and key made for this job only, as PEM text to send to
    the other ranks over MPI (never through a shared file system); None without TLS."""
    if not tls:
        return None
    try:
        made = Security.temporary()
    except ImportError:  # distributed makes them with the cryptography package
        raise LaunchError(
            "TLS, the default, needs the cryptography package: pip install cryptography, "
            "or run with --no-tls on a machine where you trust everyone"
        ) from None
    return {field: getattr(made, field) for field in TLS_FIELDS}


def security_from(credentials: dict[str, str] | None) -> Security:
    if credentials is None:
        return Security()  # Dask's own TLS configuration, if any, still applies
    return Security(require_encryption=True, **credentials)


def write_client_credentials(credentials: dict[str, str], folder: Path) -> dict[str, str]:
    """Write what a client needs (the CA, a certificate and its key) into a
    user-only folder; return the DASK_* variables that make Client() use them,
    for the script's subprocesses and JupyterLab's kernels."""
    folder.mkdir(mode=0o700, exist_ok=True)
    files = {
        "CA_FILE": ("ca.pem", credentials["tls_ca_file"]),
        "CLIENT__CERT": ("client-cert.pem", credentials["tls_client_cert"]),
        "CLIENT__KEY": ("client-key.pem", credentials["tls_client_key"]),
    }
    variables = {"DASK_DISTRIBUTED__COMM__REQUIRE_ENCRYPTION": "True"}
    for key, (name, text) in files.items():
        path = folder / name
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(text)
        variables[f"DASK_DISTRIBUTED__COMM__TLS__{key}"] = str(path)
    return variables


def comm_protocol(args: argparse.Namespace) -> str | None:
    return "tls" if args.tls else args.protocol


def scheduler_options(args: argparse.Namespace, local: bool, security: Security) -> dict[str, Any]:
    host = listen_host(args.interface, local)
    port = choose_port(
        args.scheduler_port, DEFAULT_SCHEDULER_PORT,
        lambda p: port_is_free(host, p), "--scheduler-port",
    )
    return dict(
        host=host if local and not args.interface else None,
        port=port,
        interface=args.interface,
        protocol=comm_protocol(args),
        security=security,
        # Both defaults may give way to the same next port: the dashboard takes another.
        dashboard_address=dashboard_address(
            args.dashboard_address, lambda h, p: p != port and port_is_free(h, p)
        ),
        scheduler_file=args.scheduler_file,
    )


def worker_options(role: Role, args: argparse.Namespace, security: Security) -> dict[str, Any]:
    return dict(
        name=role.name,
        nthreads=role.nthreads,
        memory_limit=role.memory_limit,
        resources={"GPU": 1} if role.gpu is not None else None,
        local_directory=local_directory(args),
        interface=args.interface,
        protocol=comm_protocol(args),
        security=security,
        # The worker's own HTTP server only serves metrics; keep it off the network.
        dashboard_address="127.0.0.1:0",
        # Past the driver's own wait, so that the driver names the missing workers.
        death_timeout=args.startup_timeout + STARTUP_MARGIN,
    )


def nanny_options(
    role: Role, args: argparse.Namespace, security: Security, log_file: Path
) -> dict[str, Any]:
    """The worker's options, plus what its process needs before it starts: its
    GPU and where to log."""
    return dict(
        worker_options(role, args, security),
        worker_class=NannyWorker,
        env=worker_process_environment(role, args, log_file),
    )


def worker_process_environment(
    role: Role, args: argparse.Namespace, log_file: Path
) -> dict[str, str]:
    """What a nanny's worker process needs in its environment: its GPU, and
    where NannyWorker logs."""
    return {
        **role.environment(),
        LOG_FILE_VARIABLE: str(log_file),
        VERBOSE_VARIABLE: str(int(args.verbose)),
    }


def scheduler_info(scheduler: Scheduler) -> SchedulerInfo:
    # Without bokeh the HTTP server still runs, but serves no dashboard.
    has_dashboard = importlib.util.find_spec("bokeh") is not None
    return SchedulerInfo(
        address=scheduler.address,
        host=socket.gethostname().split(".")[0],
        fqdn=socket.getfqdn(),
        dashboard_port=scheduler.http_server.port if has_dashboard else None,
    )


# --------------------------------------------------------------------------
# The driver: the user's script, run as `python script.py` would run it
# --------------------------------------------------------------------------


def exit_status(code: object) -> int:
    """The status ``sys.exit(code)`` gives a process, as the interpreter computes it."""
    if code is None:
        return 0
    if isinstance(code, int):
        return code
    print(code, file=sys.stderr)
    return 1


def frames_from(tb: Any, filename: str) -> Any:
    """The traceback from the script's first frame on, as ``python script.py``
    shows it, without the launcher's and runpy's frames above it."""
    start = tb
    while tb is not None:
        if tb.tb_frame.f_code.co_filename == filename:
            return tb
        tb = tb.tb_next
    return start


def run_script(path: str, script_args: Sequence[str]) -> int:
    """Run ``path`` as ``__main__`` with its own argv and folder on sys.path;
    return the exit status ``python path`` would have."""
    script = os.path.abspath(path)
    saved_argv, saved_path = sys.argv, list(sys.path)
    sys.argv = [path, *script_args]
    sys.path.insert(0, os.path.dirname(script))
    try:
        runpy.run_path(script, run_name="__main__")
    except SystemExit as e:
        return exit_status(e.code)
    except KeyboardInterrupt as e:
        return announce_interrupt(e)
    except BaseException as e:
        traceback.print_exception(type(e), e, frames_from(e.__traceback__, script))
        return 1
    finally:
        sys.argv, sys.path[:] = saved_argv, saved_path
    return 0


def point_clients_here(address: str, credentials: dict[str, str] | None, log_dir: Path) -> None:
    """Make ``Client()`` with no arguments reach this cluster, with its
    credentials: here, in the script's subprocesses and in JupyterLab's kernels."""
    variables = {"DASK_SCHEDULER_ADDRESS": address}
    if credentials is not None:
        variables.update(write_client_credentials(credentials, log_dir / "credentials"))
    os.environ.update(variables)
    dask.config.update(dask.config.config, dask.config.collect_env(variables))


def close_clients_left_open() -> None:
    """Close the clients the script did not: they would retry, loudly, once the
    cluster is gone.  Client._instances is distributed's own registry of them."""
    for client in list(Client._instances):
        client.close()


@contextlib.contextmanager
def ended_if_scheduler_lost(client: Client, info: SchedulerInfo, log_dir: Path) -> Iterator[None]:
    """End the run with one line once the scheduler is gone: the script's
    futures fail, but a script busy elsewhere, or JupyterLab, would go on until
    the walltime.  Where mpirun kills every rank as soon as one dies (MPICH,
    Open MPI), this has no time to act; where it does not (srun without
    --kill-on-bad-exit), or where the scheduler closed itself, it ends the job."""
    lost = threading.Event()
    done = threading.Event()
    main = threading.main_thread().ident
    message = (
        f"lost the scheduler (rank {SCHEDULER_RANK} on {info.host}): the job ends; "
        f"see {log_dir / f'rank{SCHEDULER_RANK}-scheduler.log'}"
    )

    def watch() -> None:
        gone_since = None
        while not done.wait(POLL_INTERVAL * 10):
            if client.status == "running":
                gone_since = None
            elif gone_since is None:
                gone_since = time.monotonic()
            elif time.monotonic() - gone_since > SCHEDULER_LOST_GRACE:
                lost.set()
                # A real signal, not interrupt_main(): it also ends a blocking wait.
                signal.pthread_kill(main, signal.SIGTERM)
                return

    def on_sigterm(signum: int, frame: Any) -> None:
        raise SchedulerLost(message) if lost.is_set() else Terminated

    previous = signal.signal(signal.SIGTERM, on_sigterm)
    watcher = threading.Thread(target=watch, name="watch the scheduler", daemon=True)
    watcher.start()
    try:
        yield
    finally:
        done.set()
        watcher.join()
        signal.signal(signal.SIGTERM, previous)
        if client.status != "running":
            # Closing a client that still tries to reconnect logs a traceback per try.
            logging.getLogger("distributed.client").setLevel(logging.CRITICAL)
    if client.status != "running" and not lost.is_set():  # the script's futures failed first
        raise SchedulerLost(message)


def wait_for_workers(client: Client, layout: Layout, timeout: float, log_dir: Path) -> None:
    """Return once every planned worker has registered; raise LaunchError at
    the first failure a worker reports, or naming the missing ones at timeout."""
    expected = layout.workers
    deadline = time.monotonic() + timeout
    while True:
        try:
            client.wait_for_workers(len(expected), timeout=min(1.0, timeout))
            return
        except TimeoutError:
            pass
        failed = [message for _, message in client.get_events(FAILURES_TOPIC)]
        if failed:
            raise LaunchError(f"{'; '.join(failed)}; see the logs in {log_dir}")
        if time.monotonic() >= deadline:
            break
    seen = {w["name"] for w in client.scheduler_info(n_workers=-1)["workers"].values()}
    missing = [role for role in expected if role.name not in seen]
    raise LaunchError(
        f"{len(missing)} of {len(expected)} workers did not register within "
        f"{timeout:g} s: rank(s) {format_ranks(r.rank for r in missing)} "
        f"({', '.join(str(r.name) for r in missing)}); see their logs in {log_dir}"
    )


def run_script_session(args: argparse.Namespace, info: SchedulerInfo, route: list[str]) -> int:
    print(connection_banner(info, route))
    print(flush=True)
    code = run_script(args.script, args.script_args)
    print("Code ran successfully." if code == 0 else f"Code failed with exit status {code}.")
    return code


def drive(
    args: argparse.Namespace,
    info: SchedulerInfo,
    layout: Layout,
    log_dir: Path,
    credentials: dict[str, str] | None,
    reads_stdin: bool,
) -> int:
    """Connect, wait for every worker, print where things are, then run the
    script, or JupyterLab until 'stop'; ``reads_stdin`` says whether 'stop'
    is typed here."""
    print(f"Scheduler address: {info.address} on node {info.host}")
    print("Starting the workers")
    for note in layout.notes:
        print(f"start_daskmpi: warning: {note}", file=sys.stderr)
    try:
        client = Client(
            info.address, timeout=args.startup_timeout, security=security_from(credentials)
        )
    except OSError as e:
        report(f"cannot reach the scheduler at {info.address} ({e}): check --interface")
        return 1
    try:
        with client, ended_if_scheduler_lost(client, info, log_dir):
            point_clients_here(info.address, credentials, log_dir)
            route = ssh_route(args.ssh_hops, info.host, info.fqdn, getpass.getuser())
            try:
                wait_for_workers(client, layout, args.startup_timeout, log_dir)
                print(f"Client status: {client}")
                print(f"Logs: {log_dir}")
                print()
                if args.script:
                    return run_script_session(args, info, route)
                return serve_jupyterlab(args, client, info, route, log_dir, reads_stdin)
            except LaunchError as e:
                report(str(e))
                return 1
    finally:
        close_clients_left_open()


def farewell(code: int) -> None:
    print("Successfully exited" if code == 0 else f"Exited with status {code}")


# --------------------------------------------------------------------------
# JupyterLab: with no script, what the driver runs until 'stop'
# --------------------------------------------------------------------------


def lab_settings(dashboard_port: int, folder: Path) -> Path:
    """JupyterLab's app settings folder for this run: the installed one's, plus a
    default for dask-labextension's dashboard URL, through JupyterLab's proxy."""
    from jupyterlab.commands import get_app_dir

    installed = Path(get_app_dir()) / "settings"
    if installed.is_dir():
        shutil.copytree(installed, folder, dirs_exist_ok=True)
    overrides = folder / "overrides.d"
    overrides.mkdir(parents=True, exist_ok=True)
    default = {"dask-labextension:plugin": {"defaultURL": f"proxy/{dashboard_port}"}}
    (overrides / "start_daskmpi.json").write_text(json.dumps(default))
    return folder


def start_jupyterlab(port: int, token: str, dashboard_port: int | None, log: Path) -> Any:
    env = {**os.environ, "JUPYTER_TOKEN": token}  # not an argument: ps shows those to all
    options = []
    if dashboard_port is not None:
        # Notebooks' Client() and the Dask sidebar find the dashboard through
        # JupyterLab's proxy, which the JupyterLab tunnel alone reaches.
        env["DASK_DISTRIBUTED__DASHBOARD__LINK"] = "/proxy/{port}/status"
        settings = lab_settings(dashboard_port, log.parent / "jupyterlab-settings")
        # A fresh workspace: a saved one keeps the Dask sidebar on the last job's URL.
        workspaces = log.parent / "jupyterlab-workspaces"
        options += [
            f"--LabApp.app_settings_dir={settings}", f"--LabApp.workspaces_dir={workspaces}"
        ]
    command = [
        sys.executable, "-m", "jupyterlab", "--no-browser", "--ServerApp.ip=127.0.0.1",
        f"--ServerApp.port={port}", "--ServerApp.port_retries=0",
        f"--ServerApp.root_dir={os.getcwd()}", *options,
        # In containers one is often root; jupyter_server refuses that unless told.
        *(["--ServerApp.allow_root=True"] if os.geteuid() == 0 else []),
    ]
    log_fd = os.open(log, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)  # it holds the token
    try:
        # A session of its own: a Ctrl-C at the terminal comes to us, and we stop
        # JupyterLab in order, kernels first.
        return subprocess.Popen(
            command, env=env, stdin=subprocess.DEVNULL, stdout=log_fd,
            stderr=subprocess.STDOUT, start_new_session=True,
        )
    finally:
        os.close(log_fd)


def wait_until_serving(lab: Any, port: int, token: str, log: Path, timeout: float) -> None:
    status = urllib.request.Request(
        f"http://127.0.0.1:{port}/api/status", headers={"Authorization": f"token {token}"}
    )
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if lab.poll() is not None:
            raise LaunchError(f"JupyterLab exited with status {lab.returncode}: see {log}")
        try:
            with urllib.request.urlopen(status, timeout=5):
                return
        except OSError:
            time.sleep(0.2)
    raise LaunchError(f"JupyterLab did not answer within {timeout:g} s: see {log}")


def stop_jupyterlab(lab: Any) -> None:
    """SIGTERM, on which jupyter_server shuts its kernels down; SIGKILL if it hangs."""
    if lab.poll() is None:
        lab.terminate()
        try:
            lab.wait(JUPYTER_STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            lab.kill()
            lab.wait()


def watch_stdin(on_stop: Callable[[], Any]) -> None:
    """Call ``on_stop`` once 'stop' is typed.  mpirun forwards stdin to rank 0
    only, so under MPI this runs there; stdin at EOF (a batch job) never stops."""

    def read() -> None:
        for line in sys.stdin:
            if line.strip().lower() == "stop":
                on_stop()
                return
            print("Type 'stop' to stop Dask.", flush=True)

    threading.Thread(target=read, name="watch stdin for stop", daemon=True).start()


def serve_jupyterlab(
    args: argparse.Namespace,
    client: Client,
    info: SchedulerInfo,
    route: list[str],
    log_dir: Path,
    reads_stdin: bool,
) -> int:
    """JupyterLab on this node until 'stop', or until it is shut down from inside."""
    print("Starting JupyterLab on the scheduler...", flush=True)
    stop = threading.Event()
    client.subscribe_topic(CONTROL_TOPIC, lambda event: stop.set())
    if client.get_events(CONTROL_TOPIC):  # typed while the workers were starting
        stop.set()
    if reads_stdin:
        watch_stdin(lambda: client.log_event(CONTROL_TOPIC, "stop"))
    port = choose_port(
        args.jupyter_port, DEFAULT_JUPYTER_PORT,
        lambda p: p != info.dashboard_port and port_is_free("127.0.0.1", p), "--jupyter-port",
    )
    token = secrets.token_urlsafe(32)
    log = log_dir / "jupyterlab.log"
    lab = start_jupyterlab(port, token, info.dashboard_port, log)
    try:
        wait_until_serving(lab, port, token, log, JUPYTER_START_TIMEOUT)
        print()
        print(jupyter_banner(route, port, info.dashboard_port, token, log))
        print()
        print("JupyterLab started. Type 'stop' to stop Dask:", flush=True)
        while not stop.wait(0.5) and lab.poll() is None:
            pass
    finally:
        stop_jupyterlab(lab)
    print("Stopping Dask")
    return 0


# --------------------------------------------------------------------------
# MPI: one role per rank
# --------------------------------------------------------------------------


def launcher_world(environ: Mapping[str, str]) -> tuple[int, int] | None:
    """(size, rank) as the MPI launcher that started us says, read before MPI
    is initialised; None when no launcher we know started this process."""
    for size, rank in LAUNCHER_VARIABLES:
        if environ.get(size, "").isdigit() and environ.get(rank, "").isdigit():
            return int(environ[size]), int(environ[rank])
    return None


def mpi_world(environ: Mapping[str, str]) -> Any:
    """COMM_WORLD when a launcher started several ranks, else None (local mode)."""
    launched = launcher_world(environ)
    if launched is None or launched[0] == 1:
        return None
    try:
        import mpi4py

        mpi4py.rc.finalize = False  # exit_together() does, bounded
        from mpi4py import MPI
    except (ImportError, RuntimeError) as e:
        raise LaunchError(
            f"cannot use MPI under this mpirun ({e}): pip install mpi4py, or "
            "start_daskmpi[mpi] for an MPI of its own"
        ) from None
    world = MPI.COMM_WORLD
    if world.size != launched[0]:
        library = MPI.Get_library_version().splitlines()[0].strip()
        raise LaunchError(
            f"mpirun started {launched[0]} ranks but mpi4py sees {world.size}: mpi4py "
            f"uses another MPI ({library}); use that MPI's mpirun, or rebuild mpi4py "
            "for this one (env MPICC=mpicc pip install --no-binary mpi4py mpi4py)"
        )
    return world


async def receive(world: Any, source: int, tag: int) -> Any:
    """One message, waited for by polling: a blocking MPI receive would spin a
    core that the node's workers need."""
    request = world.irecv(source=source, tag=tag)
    try:
        while True:
            done, message = request.test()
            if done:
                return message
            await asyncio.sleep(POLL_INTERVAL)
    except asyncio.CancelledError:
        request.cancel()  # a receive left pending would trouble MPI_Finalize
        request.wait()
        raise


async def job_end(world: Any) -> int:
    """The driver's word that the job is over: its exit status.  The launcher
    sends SIGINT and SIGTERM to every rank, so the driver is ending the job too:
    after one, wait for its word at most SIGNAL_GRACE seconds."""
    loop = asyncio.get_running_loop()
    signals: asyncio.Queue[int] = asyncio.Queue()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, signals.put_nowait, signum)
    end = asyncio.ensure_future(receive(world, DRIVER_RANK, TAG_END))
    signaled = asyncio.ensure_future(signals.get())
    await asyncio.wait([end, signaled], return_when=asyncio.FIRST_COMPLETED)
    if end.done():
        signaled.cancel()
        return end.result()
    try:
        return await asyncio.wait_for(end, SIGNAL_GRACE)
    except TimeoutError:
        return 128 + signaled.result()


def send_to_all(world: Any, message: Any, tag: int) -> None:
    from mpi4py import MPI

    others = (r for r in range(world.size) if r != world.rank)
    MPI.Request.waitall([world.isend(message, dest=r, tag=tag) for r in others])


def agree(world: Any, error: str | None) -> bool:
    """True when no rank has an error; rank 0 prints each distinct one once."""
    errors = world.allgather(error)
    if world.rank == SCHEDULER_RANK:
        for message in dict.fromkeys(e for e in errors if e):
            report(message)
    return not any(errors)


def agree_on_layout(world: Any, args: argparse.Namespace) -> Layout | None:
    """Every rank's role, agreed by all; None when a node cannot host the plan."""
    from mpi4py import MPI

    # One rank per node looks: GPU detection is node-wide, and the mask the
    # batch system gave the node's first rank stands for the node.
    node_comm = world.Split_type(MPI.COMM_TYPE_SHARED, key=world.rank)
    first_on_node = node_comm.rank == 0
    mine = (
        (world.rank, *attempt(this_node, args.gpus_per_node, args.require_gpu, args.gpu_vendor))
        if first_on_node else None
    )
    leader, node, error = node_comm.bcast(mine, root=0)
    node_comm.Free()
    if not agree(world, error):
        return None
    gathered = world.allgather((leader, node))
    nodes = dict(gathered)  # leader rank -> node, in the order of first rank
    leaders = list(nodes)
    return plan_layout(
        [leaders.index(leader) for leader, _ in gathered],
        list(nodes.values()),
        nthreads=args.nthreads,
        memory_limit=args.memory_limit,
    )


def prepare_rank(role: Role, args: argparse.Namespace, log_dir: Path) -> Path:
    """Open this rank's log and check what its role needs; return the log file
    its worker process (if any) writes."""
    try:
        log_dir.mkdir(mode=0o700, parents=True, exist_ok=True)  # node-local --log-dir
        log_to_file(log_dir / f"rank{role.rank}-{role.kind}.log", args.verbose)
    except OSError as e:
        raise LaunchError(f"cannot write logs to {log_dir} on {role.host}: {e.strerror}") from None
    preflight(role, args)
    return log_dir / f"rank{role.rank}-worker-process.log"


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


async def workers_gone(scheduler: Scheduler, timeout: float) -> None:
    """Wait for the workers, told by their ranks to close, to say goodbye: a
    scheduler that closes first cuts their streams mid-goodbye."""
    deadline = asyncio.get_running_loop().time() + timeout
    while scheduler.workers and asyncio.get_running_loop().time() < deadline:
        await asyncio.sleep(POLL_INTERVAL)


async def start_scheduler(args: argparse.Namespace, security: Security) -> Scheduler:
    """The scheduler on the port chosen for it.  Another launcher starting on this
    node at the same moment may bind a default port between our choice and our
    bind: then the next free port."""
    for _ in range(PORT_RACE_ATTEMPTS):
        options = scheduler_options(args, False, security)
        try:
            return await Scheduler(**options)
        except Exception as e:
            cause = e.__cause__ or e
            raced = getattr(cause, "errno", None) == errno.EADDRINUSE
            if not raced or args.scheduler_port is not None:
                raise LaunchError(f"the scheduler failed to start: {cause}") from None
    raise LaunchError(f"the scheduler failed to start: every port tried was taken: {cause}")


async def serve_scheduler(world: Any, args: argparse.Namespace, security: Security) -> int:
    try:
        scheduler = await start_scheduler(args, security)
    except LaunchError as e:
        report(str(e))
        send_to_all(world, (None, str(e)), TAG_START)
        return 2
    end = asyncio.ensure_future(job_end(world))
    if args.script is None:
        loop = asyncio.get_running_loop()
        watch_stdin(lambda: loop.call_soon_threadsafe(scheduler.log_event, CONTROL_TOPIC, "stop"))
    async with scheduler:
        send_to_all(world, (scheduler_info(scheduler), None), TAG_START)
        await unless_ended(end, scheduler.finished())
        await workers_gone(scheduler, WORKERS_LEAVE_TIMEOUT)
    return await end


async def serve_worker(
    world: Any, args: argparse.Namespace, role: Role, log_file: Path, security: Security
) -> int:
    info, error = await receive(world, SCHEDULER_RANK, TAG_START)
    if error is not None:
        return 2
    end = asyncio.ensure_future(job_end(world))
    server = make_worker(info.address, role, args, security, log_file)
    try:
        if await unless_ended(end, server):  # each kind of server starts when awaited
            await unless_ended(end, server.finished())
    except Exception as e:
        # Distributed has logged why; tell the driver, which is waiting for this worker.
        logger.info("worker %s failed", role.name, exc_info=True)
        await report_failure(
            info.address,
            f"worker {role.name} (rank {role.rank}) failed: {describe(e)}",
            security,
        )
    finally:
        # A start cut short leaves a nanny "starting": its close may then assert,
        # or leave the worker process running, which ignores SIGTERM: kill it.
        processes = [
            nanny.process.process
            for nanny in getattr(server, "nannies", [server])  # dask-cuda's has nannies
            if getattr(getattr(nanny, "process", None), "process", None) is not None
        ]
        with contextlib.suppress(Exception):
            if isinstance(server, Worker):  # a task still running is abandoned, not awaited
                await server.close(executor_wait=False)
            else:
                await server.close()
        for process in processes:
            if process.is_alive():
                await process.kill()
                await process.join(WORKERS_LEAVE_TIMEOUT)
    return await end


def make_worker(
    address: str, role: Role, args: argparse.Namespace, security: Security, log_file: Path
) -> Any:
    """This rank's worker: dask-cuda's, for a GPU where dask-cuda is installed
    (its CPU affinity, device memory spilling and RMM pool), else distributed's,
    behind a nanny unless --no-nanny."""
    if not args.nanny:
        return Worker(address, **worker_options(role, args, security))
    nvidia = role.pin == VENDORS["nvidia"].masks[0]
    if role.gpu is None or not nvidia or importlib.util.find_spec("dask_cuda") is None:
        return Nanny(address, **nanny_options(role, args, security, log_file))
    from dask_cuda import CUDAWorker

    # It spawns one nanny per visible GPU, with an environment of its choosing:
    # the rank's own carries the pin and the log file to its worker process.
    os.environ.update(worker_process_environment(role, args, log_file))
    options = worker_options(role, args, security)
    resources = options.pop("resources")  # it takes them as its command line does
    return CUDAWorker(
        address,
        **options,
        resources=",".join(f"{name}={count}" for name, count in resources.items()),
        worker_class=NannyWorker,
        rmm_pool_size=args.rmm_pool_size,
        # Without this, CuPy keeps allocating from its own pool, not RMM's.
        rmm_allocator_external_lib_list=["cupy"] if args.rmm_pool_size else None,
        device_memory_limit=args.device_memory_limit or "default",
    )


async def report_failure(address: str, message: str, security: Security) -> None:
    """Post ``message`` in the scheduler's event log, where the driver looks.
    Not an MPI message: one the driver never received would break MPI_Finalize."""
    try:
        connection_args = security.get_connection_args("worker")
        async with rpc(address, timeout=10, connection_args=connection_args) as scheduler:
            await scheduler.log_event(topic=FAILURES_TOPIC, msg=message)
    except OSError:
        logger.warning("could not tell the scheduler: %s", message)


def describe(error: BaseException) -> str:
    """The first cause of a failed start: distributed wraps it ("Nanny failed to
    start") and may raise more while cleaning up."""
    chain = []
    while error is not None and error not in chain:
        chain.append(error)
        error = error.__cause__ or error.__context__
    if any(isinstance(e, TimeoutError) for e in chain):
        return "it did not start in time"
    first = chain[-1]
    return f"{type(first).__name__}: {first}"


async def stay_idle(world: Any) -> int:
    _, error = await receive(world, SCHEDULER_RANK, TAG_START)
    if error is not None:
        return 2
    return await job_end(world)


def serve_driver(
    world: Any, args: argparse.Namespace, layout: Layout, log_dir: Path, credentials: Any
) -> int:
    print("Starting the scheduler", flush=True)
    info, error = asyncio.run(receive(world, SCHEDULER_RANK, TAG_START))
    if error is not None:
        return 2
    code = 1
    try:
        with hard_exit_ends_the_job(world):
            code = drive_until_interrupted(
                args, info, layout, log_dir, credentials, reads_stdin=False
            )
    finally:
        send_to_all(world, code, TAG_END)  # every rank waits for this word
    return code


@contextlib.contextmanager
def hard_exit_ends_the_job(world: Any) -> Iterator[None]:
    """Make the script's ``os._exit(n)`` end the job with status n, as it ends
    ``python script.py``: mpirun would see the driver vanish, kill the other
    ranks and report a signal.  The other ranks are told first, and exit with
    it; a forked child's ``os._exit`` stays the plain one."""
    plain_exit, driver = os._exit, os.getpid()

    def end_job_and_exit(status: int) -> None:
        if os.getpid() == driver:
            sys.stdout.flush()
            sys.stderr.flush()
            send_to_all(world, status, TAG_END)
            exit_together(world)
            # exit(3), not _exit(2): MPICH's exit handlers must run for its
            # mpirun to count this rank's end as clean.
            ctypes.CDLL(None).exit(status)
        plain_exit(status)

    os._exit = end_job_and_exit
    try:
        yield
    finally:
        os._exit = plain_exit


def drive_until_interrupted(
    args: argparse.Namespace,
    info: SchedulerInfo,
    layout: Layout,
    log_dir: Path,
    credentials: dict[str, str] | None,
    reads_stdin: bool,
) -> int:
    """drive(), ended early by Ctrl-C or SIGTERM with the status a shell reports."""
    signal.signal(signal.SIGTERM, raise_terminated)
    try:
        code = drive(args, info, layout, log_dir, credentials, reads_stdin)
    except KeyboardInterrupt as e:
        code = announce_interrupt(e)
    farewell(code)
    return code


def exit_together(world: Any) -> None:
    """Finalise MPI once every rank is done with its role.  MPICH's MPI_Finalize
    waits for every rank, with no bound; and its mpirun kills the ranks not yet
    finalised as soon as one exits non-zero, then reports the kill instead of
    the status.  A rank that never comes leaves MPI unfinalised, and mpirun
    ends the job."""
    from mpi4py import MPI

    done = world.Ibarrier()
    deadline = time.monotonic() + LEAVE_TIMEOUT
    while not done.Test() and time.monotonic() < deadline:
        time.sleep(POLL_INTERVAL)
    if done.Test():
        MPI.Finalize()


def run_rank(world: Any, args: argparse.Namespace) -> int:
    if world.size < MIN_WORLD_SIZE:
        if world.rank == SCHEDULER_RANK:
            report(world_too_small(world.size))
        return 2
    layout = agree_on_layout(world, args)
    if layout is None:
        return 2
    made = None
    if world.rank == SCHEDULER_RANK:
        log_dir, error = attempt(make_log_dir, args.log_dir)
        credentials, tls_error = attempt(make_credentials, args.tls)
        made = log_dir, credentials, error or tls_error
    log_dir, credentials, error = world.bcast(made, root=SCHEDULER_RANK)
    if not agree(world, error):
        return 2
    security = security_from(credentials)
    role = layout.roles[world.rank]
    worker_log, error = attempt(prepare_rank, role, args, log_dir)
    if not agree(world, error):
        return 2
    if args.verbose and world.rank == SCHEDULER_RANK:
        print("\n".join(["Plan:", *(f"    {line}" for line in describe_layout(layout))]))
    logger.info("rank %d on %s: %s", world.rank, role.host, role)
    if role.kind == "scheduler":
        return asyncio.run(serve_scheduler(world, args, security))
    if role.kind == "driver":
        return serve_driver(world, args, layout, log_dir, credentials)
    if role.kind == "worker":
        os.environ.update(role.environment())
        return asyncio.run(serve_worker(world, args, role, worker_log, security))
    return asyncio.run(stay_idle(world))


# --------------------------------------------------------------------------
# No mpirun: the same cluster in this process
# --------------------------------------------------------------------------


def run_local(args: argparse.Namespace) -> int:
    layout = plan_local(
        this_node(args.gpus_per_node, args.require_gpu, args.gpu_vendor),
        nthreads=args.nthreads, memory_limit=args.memory_limit,
    )
    log_dir = make_log_dir(args.log_dir)
    log_to_file(log_dir / "local.log", args.verbose)
    for role in layout.roles:
        preflight(role, args)
    print("Starting the scheduler", flush=True)
    credentials = make_credentials(args.tls)
    security = security_from(credentials)
    workers = {
        role.name: {
            "cls": Nanny,
            "options": nanny_options(role, args, security, log_dir / f"worker-{role.name}.log"),
        }
        for role in layout.workers
    }
    scheduler = {"cls": Scheduler, "options": scheduler_options(args, True, security)}
    try:
        cluster = SpecCluster(
            workers=workers, scheduler=scheduler, security=security, name="start_daskmpi"
        )
    except Exception as e:
        raise LaunchError(f"the local cluster failed to start: {describe(e)}") from None
    with cluster:
        return drive_until_interrupted(
            args, scheduler_info(cluster.scheduler), layout, log_dir, credentials,
            reads_stdin=True,
        )


def main(argv: Sequence[str] | None = None) -> int:
    # mpirun forwards each rank's output as it comes: keep lines whole and in order.
    sys.stdout.reconfigure(line_buffering=True)
    try:
        args = parse_args(argv)
        if args.plan:
            print(plan_report(args, this_node(args.gpus_per_node, vendor=args.gpu_vendor)))
            return 0
        world = mpi_world(os.environ)
        check_dask_cuda(args, local=world is None)
        if world is None:
            return run_local(args)
    except LaunchError as e:
        launched = launcher_world(os.environ)
        if launched is None or launched[1] == 0:
            report(str(e))
        return 2
    try:
        code = run_rank(world, args)
    except Exception:
        # A fault of ours: the other ranks would wait for this one forever.
        logger.exception("rank %d failed", world.rank)
        world.Abort(1)
        raise
    exit_together(world)
    return code


if __name__ == "__main__":
    sys.exit(main())
