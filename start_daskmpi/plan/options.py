"""Every option, in one table: its flags, its value's check, its help.  The
command line is parsed from it (argparse), and the Python API's keywords are
checked by it, the same option by its name (``gpus_per_node=4``)."""
from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from start_daskmpi.errors import LaunchError
from start_daskmpi.plan import values
from start_daskmpi.plan.folders import NODE_SCRATCH
from start_daskmpi.plan.gpus import VENDORS
from start_daskmpi.plan.ports import DEFAULT_JUPYTER_PORT, DEFAULT_SCHEDULER_PORT


@dataclass(frozen=True)
class Option:
    """One option: ``flags`` as typed, ``group`` of --help, a check of its value
    (``type``), and how it takes one: a ``switch`` (--x, on by default, and
    --no-x), a ``flag`` (--x, off by default), ``repeat``ed, or a value."""

    flags: tuple[str, ...]
    group: str
    help: str
    type: Callable[[str], Any] | None = None
    default: Any = None
    metavar: str | None = None
    switch: bool = False
    flag: bool = False
    repeat: bool = False
    choices: tuple[str, ...] | None = None

    @property
    def name(self) -> str:
        """Its dest, and its keyword in the Python API."""
        return self.flags[-1].lstrip("-").replace("-", "_")

    def add_to(self, group: Any) -> None:
        if self.switch:
            group.add_argument(*self.flags, action=argparse.BooleanOptionalAction,
                               default=True, help=self.help)
        elif self.flag:
            group.add_argument(*self.flags, action="store_true", help=self.help)
        else:
            group.add_argument(*self.flags, type=self.type, default=self.default,
                               metavar=self.metavar, choices=self.choices,
                               action="append" if self.repeat else "store", help=self.help)

    def from_keyword(self, value: Any) -> Any:
        """A keyword's value, checked as the command line's: a bool for a
        switch or flag; the checked text for the others (a list for one
        repeated, or --pre-import's names)."""
        if self.switch or self.flag:
            if not isinstance(value, bool):
                raise self.refused(f"expected True or False, got {value!r}")
            return value
        if self.repeat:
            return [self.checked(each) for each in ([value] if isinstance(value, (str, os.PathLike))
                                                    else value)]
        if self.name == "pre_import" and not isinstance(value, str):
            value = ",".join(value)
        return self.checked(value)

    def checked(self, value: Any) -> Any:
        text = os.fspath(value) if isinstance(value, os.PathLike) else str(value)
        if self.choices is not None and text not in self.choices:
            raise self.refused(f"invalid choice: {text!r} (choose from {', '.join(self.choices)})")
        try:
            return self.type(text) if self.type else text
        except argparse.ArgumentTypeError as e:
            raise self.refused(str(e)) from None

    def refused(self, why: str) -> LaunchError:
        """As argparse says it, so that a keyword reads as its option does."""
        return LaunchError(f"argument {'/'.join(self.flags)}: {why} (see --help)")


WORKERS, NETWORK, RUN, PLAN = "workers", "network", "run", "plan"
OPTIONS = (
    Option(("--nthreads",), WORKERS, metavar="N", type=values.positive_int,
           help="threads per worker (default: 1 per GPU worker; CPU workers share the node's "
           "cores)"),
    Option(("--memory-limit",), WORKERS, metavar="LIMIT", type=values.memory_limit,
           default="auto",
           help="memory per worker: bytes (80GB), a fraction of the node, 0 for none, "
           "or auto: the node's memory shared among its workers (default)"),
    Option(("--local-directory",), WORKERS, metavar="DIR", type=values.path_text,
           help="node-local scratch for spilling (default: first writable of $TMPDIR, "
           f"the site's scratch, {', '.join(NODE_SCRATCH)}, /tmp)"),
    Option(("--nanny",), WORKERS, switch=True,
           help="run each worker behind a nanny that restarts it if it dies (default); "
           "--no-nanny runs it in its rank's process: two processes fewer a worker, but "
           "a dead worker ends the job"),
    Option(("--preload",), WORKERS, metavar="MODULE", type=values.path_text, repeat=True,
           help="a module, or a .py file, that every worker runs as it starts (its "
           "dask_setup(worker)), as `dask worker --preload` does; repeatable"),
    Option(("--pre-import",), WORKERS, metavar="MODULES", type=values.modules,
           help="modules every worker and the scheduler import before they start (behind a "
           "nanny, its fork server; else the rank, before MPI), so that the first "
           "computation does not wait for them, separated by commas, e.g. cudf,dask_cudf "
           "('' for none; default: dask.array, and cupy on GPU workers)"),
    Option(("--gpus-per-node",), WORKERS, metavar="N", type=values.count,
           help="use this many GPUs per node instead of detecting them (0: CPU workers only)"),
    Option(("--rmm-pool-size",), WORKERS, metavar="SIZE", type=values.rmm_pool_size,
           help="GPU workers allocate from an RMM pool of this size, e.g. 70GB or 0.9 of "
           "the GPU (dask-cuda and rmm)"),
    Option(("--device-memory-limit",), WORKERS, metavar="LIMIT",
           type=values.device_memory_limit,
           help="GPU memory a worker fills before it spills to host memory, then disk, "
           "e.g. 60GB or 0.8 (dask-cuda; default: dask-cuda's)"),
    Option(("--gpu-vendor",), WORKERS, choices=tuple(sorted(VENDORS)),
           help="whose GPUs to pin workers to, by CUDA_VISIBLE_DEVICES (nvidia), "
           "ROCR_VISIBLE_DEVICES (amd) or ZE_AFFINITY_MASK (intel) (default: the maker whose "
           "mask the batch system set, else whose GPUs are found)"),
    Option(("--require-gpu",), WORKERS, flag=True,
           help="fail at once, rather than run CPU workers, where a node has no GPU or no "
           "CuPy"),
    Option(("--interface",), NETWORK, metavar="NAME",
           help="network interface to use, e.g. ib0, hsn0, lo"),
    Option(("--tls",), NETWORK, switch=True,
           help="encrypt and authenticate every connection with a certificate made for this "
           "job and shared over MPI (default): only your processes can use the cluster. "
           "--no-tls for UCX or debugging, on a machine where you trust everyone"),
    Option(("--protocol",), NETWORK, metavar="NAME",
           help="Dask comm protocol with --no-tls, e.g. tcp or ucx (with TLS: tls)"),
    Option(("--scheduler-port",), NETWORK, metavar="PORT", type=values.port,
           help=f"scheduler port (default {DEFAULT_SCHEDULER_PORT}, or the next free one)"),
    Option(("--dashboard",), NETWORK, switch=True,
           help="serve Dask's dashboard from the scheduler (default); --no-dashboard serves "
           "none"),
    Option(("--dashboard-address",), NETWORK, metavar="[HOST]:PORT", type=values.host_port,
           help="serve the dashboard on TCP at [host]:port, which every user of the node can "
           "read, even on 127.0.0.1 (a bare PORT is on 127.0.0.1), for an sshd that forwards "
           "no socket (default: a Unix socket in the scheduler's private folder, only yours)"),
    Option(("--jupyter-port",), NETWORK, metavar="PORT", type=values.port,
           help=f"JupyterLab's port, with no script (default {DEFAULT_JUPYTER_PORT}, or the "
           "next free one); JupyterLab listens on 127.0.0.1 only"),
    Option(("--ssh-hops",), NETWORK, metavar="HOPS",
           help="comma-separated SSH hops from your machine to the compute node, for the "
           "printed tunnel command (default: the site's login chain, or USER@this host)"),
    Option(("--scheduler-file",), RUN, metavar="FILE", type=values.path_text,
           help="write the scheduler's address here, for other clients"),
    Option(("--join",), RUN, metavar="SCHEDULER_FILE", type=values.path,
           help="add this job's ranks, as workers (one per GPU), to the running cluster of "
           "another job of yours started with --scheduler-file SCHEDULER_FILE; they leave "
           "when either job ends"),
    Option(("--log-dir",), RUN, metavar="DIR", type=values.path,
           help="folder for per-rank logs (default: ~/dask_logs/<job id or timestamp>)"),
    Option(("--status-file",), RUN, metavar="FILE", type=values.path,
           help="write the job's exit status here once the script ends, for a batch script: "
           "an MPI launcher may report another (Open MPI's mpirun, losing a node, says 0)"),
    Option(("--startup-timeout",), RUN, metavar="SECONDS", type=values.seconds, default=120.0,
           help="seconds to wait for every worker to register (default 120)"),
    Option(("--min-workers",), RUN, metavar="N", type=values.min_workers,
           help="start the script once N workers (or a fraction, e.g. 0.9) have registered; "
           "the others join as they come, and those that never do are named at "
           "--startup-timeout while the job goes on (default: every worker)"),
    Option(("--walltime",), RUN, metavar="TIME", type=values.walltime,
           help="the job's walltime from the launcher's start, e.g. 01:30:00 or 90m "
           "(default: the end Slurm, Cobalt or PBS gives)"),
    Option(("--walltime-margin",), RUN, metavar="SECONDS", type=values.seconds, default=60.0,
           help="stop the script or JupyterLab, as SIGTERM does, this long before the "
           "walltime ends (default 60)"),
    Option(("-v", "--verbose"), RUN, flag=True, help="show Dask's INFO logs here too"),
    Option(("--plan",), PLAN, flag=True, help="print the layout plan and exit"),
    Option(("--launch-command",), PLAN, flag=True,
           help="print only the launch command that fits this job and this machine's MPI "
           "(srun in a Slurm job), as a batch script runs it, and exit"),
    Option(("--nodes",), PLAN, metavar="N", type=values.node_count, default=1,
           help="nodes in the job (default 1)"),
    Option(("-np", "--ranks"), PLAN, metavar="N", type=values.rank_count,
           help="ranks mpirun would start (default: the count that fits)"),
    Option(("--hostfile",), PLAN, metavar="FILE", type=values.path_text,
           help="the job's node file, for the launch lines (default: $NODEFILE)"),
)
BY_NAME = {option.name: option for option in OPTIONS}
GROUPS = {PLAN: "print which rank does what, and the launch line that fits, without MPI"}


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # argparse would print usage and exit on every rank
        raise LaunchError(f"{message} (see --help)")


def program_name(argv0: str) -> str:
    """The command as the user called it, for --help's usage line: the entry
    script, the start-daskmpi command, or python -m start_daskmpi."""
    path = Path(argv0)
    if path.name == "__main__.py" and path.parent.name == "start_daskmpi":
        return "python -m start_daskmpi"
    name = path.name
    return name if name in ("start-daskmpi", "start_daskmpi.py") else "start_daskmpi.py"


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog=program_name(sys.argv[0]),
        allow_abbrev=False,  # --gpus-per-nod must not quietly mean --gpus-per-node
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
    groups = {name: parser.add_argument_group(name, GROUPS.get(name))
              for name in (WORKERS, NETWORK, RUN, PLAN)}
    for option in OPTIONS:
        option.add_to(groups[option.group])
    return parser


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """Parse the command line; raise LaunchError with one line for a bad one."""
    args = build_parser().parse_args(argv)
    if args.join and args.script:
        raise LaunchError(f"--join adds workers only, and runs no script: drop {args.script}, "
                          "and run it in the job you join")
    planning = args.plan or args.launch_command
    if not planning and (args.ranks or args.nodes != 1 or args.hostfile):
        raise LaunchError(
            "-np, --nodes and --hostfile describe a job for --plan: add --plan, or drop them"
        )
    if args.tls and args.protocol not in (None, "tls"):
        raise LaunchError(
            f"--protocol {args.protocol} carries no TLS: add --no-tls to use it (see --help)"
        )
    return args
