"""The command line: every option, its check, and its help text."""
from __future__ import annotations

import argparse
import ipaddress
import math
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from dask.utils import parse_bytes, parse_timedelta

from .errors import LaunchError
from .gpus import VENDORS
from .layout import Shape
from .places import (
    DEFAULT_JUPYTER_PORT,
    DEFAULT_SCHEDULER_PORT,
    NODE_SCRATCH,
    parse_host_port,
)
from .pre_imports import parse_modules
from .walltime import parse_clock


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # argparse would print usage and exit on every rank
        raise LaunchError(f"{message} (see --help)")


@dataclass(frozen=True)
class _Integer:
    """An argparse type: an integer from ``low`` to ``high``."""

    low: int
    high: int
    expected: str

    def __call__(self, text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            value = self.low - 1
        if not self.low <= value <= self.high:
            raise argparse.ArgumentTypeError(f"expected {self.expected}, got {text!r}")
        return value


_positive_int = _Integer(1, sys.maxsize, "a positive integer")
# A plan beyond the largest machines would only take minutes and memory to print.
MOST_NODES, MOST_RANKS = 100_000, 1_000_000
_node_count = _Integer(1, MOST_NODES, f"a node count, 1-{MOST_NODES}")
_rank_count = _Integer(1, MOST_RANKS, f"a rank count, 1-{MOST_RANKS}")
_count = _Integer(0, sys.maxsize, "0 or more")
_port = _Integer(0, 65535, "a port number, 0-65535")


LONGEST_WAIT = 30 * 24 * 3600.0  # seconds: longer than any batch job runs


def _seconds(text: str) -> float:
    try:
        value = parse_timedelta(text, default="seconds")
    except (ValueError, KeyError, IndexError, TypeError, OverflowError):  # dask's, for bad text
        value = math.nan
    if not 0 < value <= LONGEST_WAIT:  # nan, too, is refused
        raise argparse.ArgumentTypeError(
            f"expected a duration such as 60, 90s or 2m (at most 30 days), got {text!r}"
        )
    return value


def _path_text(text: str) -> str:
    if "\0" in text:
        raise argparse.ArgumentTypeError("a path cannot hold a NUL character")
    return text


def _path(text: str) -> Path:
    return Path(_path_text(text))


def _min_workers(text: str) -> float:
    """A count of workers (1 or more), or a fraction of them (above 0, below 1)."""
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not (0 < value < 1 or (value >= 1 and value.is_integer())):
        raise argparse.ArgumentTypeError(
            f"expected a number of workers such as 14, or a fraction such as 0.9, got {text!r}"
        )
    return value


def _walltime(text: str) -> float:
    """A duration, or a walltime as batch systems write it ([[DD:]HH:]MM:SS)."""
    if ":" not in text:
        return _seconds(text)
    try:
        return parse_clock(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected a walltime such as 01:30:00, 90m or 5400, got {text!r}"
        ) from None


@dataclass(frozen=True)
class _AmountOfMemory:
    """An argparse type: a memory size as Dask and dask-cuda take it, kept as
    typed: one of ``words``, a fraction of the memory (0 to 1), or bytes (80GB,
    or a whole number).  A bare 2.5 would be 2 bytes to them: refused."""

    words: tuple[str, ...]
    expected: str

    def __call__(self, text: str) -> str:
        if text in self.words or is_fraction(text) or is_bytes(text):
            return text
        raise argparse.ArgumentTypeError(f"expected {self.expected}, got {text!r}")


def is_fraction(text: str) -> bool:
    try:
        return 0 < float(text) <= 1
    except ValueError:
        return False


def is_bytes(text: str) -> bool:
    try:
        value = parse_bytes(text)
    except (ValueError, KeyError, IndexError, TypeError, OverflowError):
        return False
    # A whole number, or a number with its unit: dask truncates a bare 2.5 or 1e3.
    return value > 0 and (text.strip().isdigit() or not text.strip()[-1:].isdigit())


_memory_limit = _AmountOfMemory(
    ("auto", "0"), "bytes such as 80GB, a fraction such as 0.5, auto or 0"
)
_rmm_pool_size = _AmountOfMemory((), "bytes such as 70GB or a fraction of the GPU such as 0.9")
_device_memory_limit = _AmountOfMemory(
    ("auto", "0"), "bytes such as 60GB, a fraction of the GPU such as 0.8, auto or 0"
)


def _modules(text: str) -> list[str]:
    try:
        return parse_modules(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def _host_port(text: str) -> str:
    try:
        host, _ = parse_host_port(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None
    if host and not is_host(host):
        raise argparse.ArgumentTypeError(
            f"expected [HOST]:PORT with HOST an address or a name of this node, got {text!r}"
        )
    return text


def is_host(text: str) -> bool:
    """An IP address, or a name as DNS allows one (letters, digits, '-', '.')."""
    try:
        ipaddress.ip_address(text)
        return True
    except ValueError:
        return all(
            label and len(label) <= 63 and label.isascii()
            and label.replace("-", "").isalnum() and not label.startswith("-")
            for label in text.split(".")
        )


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
    add_worker_options(parser.add_argument_group("workers"))
    add_network_options(parser.add_argument_group("network"))
    add_run_options(parser.add_argument_group("run"))
    add_plan_options(parser.add_argument_group(
        "plan", "print which rank does what, and the launch line that fits, without MPI"
    ))
    # What only the Python API sets (dask_mpi_api): a Worker class of the user's,
    # and keywords for every worker, as dask-mpi's initialize() takes them.
    parser.set_defaults(worker_class=None, worker_options={})
    # Roles sharing a process, as dask-mpi's execute() may place them: the command never.
    parser.set_defaults(shape=Shape())
    parser.set_defaults(join_tag=None)  # set once a joining job's ranks agree on it
    return parser


def add_switch(group: Any, name: str, help: str) -> None:
    """--NAME, on by default, and --no-NAME."""
    group.add_argument(f"--{name}", action=argparse.BooleanOptionalAction, default=True, help=help)


def add_worker_options(group: Any) -> None:
    group.add_argument(
        "--nthreads", type=_positive_int, metavar="N",
        help="threads per worker (default: 1 per GPU worker; CPU workers share the node's cores)",
    )
    group.add_argument(
        "--memory-limit", type=_memory_limit, default="auto", metavar="LIMIT",
        help="memory per worker: bytes (80GB), a fraction of the node, 0 for none, "
        "or auto: the node's memory shared among its workers (default)",
    )
    group.add_argument(
        "--local-directory", type=_path_text, metavar="DIR",
        help="node-local scratch for spilling (default: first writable of $TMPDIR, "
        f"the site's scratch, {', '.join(NODE_SCRATCH)}, /tmp)",
    )
    add_switch(
        group, "nanny",
        "run each worker behind a nanny that restarts it if it dies (default); "
        "--no-nanny runs it in its rank's process: two processes fewer a worker, but "
        "a dead worker ends the job",
    )
    group.add_argument(
        "--preload", action="append", metavar="MODULE", type=_path_text,
        help="a module, or a .py file, that every worker runs as it starts (its "
        "dask_setup(worker)), as `dask worker --preload` does; repeatable",
    )
    group.add_argument(
        "--pre-import", type=_modules, metavar="MODULES",
        help="modules every worker and the scheduler import once the workers have "
        "registered, in the background, so that the first computation does not wait for them, "
        "separated by commas, e.g. cudf,dask_cudf ('' for none; default: "
        "dask.array, and cupy on GPU workers)",
    )
    group.add_argument(
        "--gpus-per-node", type=_count, metavar="N",
        help="use this many GPUs per node instead of detecting them (0: CPU workers only)",
    )
    group.add_argument(
        "--rmm-pool-size", type=_rmm_pool_size, metavar="SIZE",
        help="GPU workers allocate from an RMM pool of this size, e.g. 70GB or 0.9 of "
        "the GPU (dask-cuda and rmm)",
    )
    group.add_argument(
        "--device-memory-limit", type=_device_memory_limit, metavar="LIMIT",
        help="GPU memory a worker fills before it spills to host memory, then disk, "
        "e.g. 60GB or 0.8 (dask-cuda; default: dask-cuda's)",
    )
    group.add_argument(
        "--gpu-vendor", choices=sorted(VENDORS),
        help="whose GPUs to pin workers to, by CUDA_VISIBLE_DEVICES (nvidia), "
        "ROCR_VISIBLE_DEVICES (amd) or ZE_AFFINITY_MASK (intel) (default: the maker whose "
        "mask the batch system set, else whose GPUs are found)",
    )
    group.add_argument(
        "--require-gpu", action="store_true",
        help="fail at once, rather than run CPU workers, where a node has no GPU or no CuPy",
    )


def add_network_options(group: Any) -> None:
    group.add_argument(
        "--interface", metavar="NAME", help="network interface to use, e.g. ib0, hsn0, lo"
    )
    add_switch(
        group, "tls",
        "encrypt and authenticate every connection with a certificate made for this "
        "job and shared over MPI (default): only your processes can use the cluster. "
        "--no-tls for UCX or debugging, on a machine where you trust everyone",
    )
    group.add_argument(
        "--protocol", metavar="NAME",
        help="Dask comm protocol with --no-tls, e.g. tcp or ucx (with TLS: tls)",
    )
    group.add_argument(
        "--scheduler-port", type=_port, metavar="PORT",
        help=f"scheduler port (default {DEFAULT_SCHEDULER_PORT}, or the next free one)",
    )
    add_switch(
        group, "dashboard",
        "serve Dask's dashboard from the scheduler (default); --no-dashboard serves none",
    )
    group.add_argument(
        "--dashboard-address", type=_host_port, metavar="[HOST]:PORT",
        help="serve the dashboard on TCP at [host]:port, which every user of the node can "
        "read, even on 127.0.0.1 (a bare PORT is on 127.0.0.1), for an sshd that forwards no "
        "socket (default: a Unix socket in the scheduler's private folder, only yours)",
    )
    group.add_argument(
        "--jupyter-port", type=_port, metavar="PORT",
        help=f"JupyterLab's port, with no script (default {DEFAULT_JUPYTER_PORT}, or the next "
        "free one); JupyterLab listens on 127.0.0.1 only",
    )
    group.add_argument(
        "--ssh-hops", metavar="HOPS",
        help="comma-separated SSH hops from your machine to the compute node, for the "
        "printed tunnel command (default: the site's login chain, or USER@this host)",
    )


def add_run_options(group: Any) -> None:
    group.add_argument(
        "--scheduler-file", type=_path_text, metavar="FILE",
        help="write the scheduler's address here, for other clients",
    )
    group.add_argument(
        "--join", type=_path, metavar="SCHEDULER_FILE",
        help="add this job's ranks, as workers (one per GPU), to the running cluster of "
        "another job of yours started with --scheduler-file SCHEDULER_FILE; they leave "
        "when either job ends",
    )
    group.add_argument(
        "--log-dir", type=_path, metavar="DIR",
        help="folder for per-rank logs (default: ~/dask_logs/<job id or timestamp>)",
    )
    group.add_argument(
        "--status-file", type=_path, metavar="FILE",
        help="write the job's exit status here once the script ends, for a batch script: "
        "an MPI launcher may report another (Open MPI's mpirun, losing a node, says 0)",
    )
    group.add_argument(
        "--startup-timeout", type=_seconds, default=120.0, metavar="SECONDS",
        help="seconds to wait for every worker to register (default 120)",
    )
    group.add_argument(
        "--min-workers", type=_min_workers, metavar="N",
        help="start the script once N workers (or a fraction, e.g. 0.9) have registered; "
        "the others join as they come, and those that never do are named at "
        "--startup-timeout while the job goes on (default: every worker)",
    )
    group.add_argument(
        "--walltime", type=_walltime, metavar="TIME",
        help="the job's walltime from the launcher's start, e.g. 01:30:00 or 90m "
        "(default: the end Slurm, Cobalt or PBS gives)",
    )
    group.add_argument(
        "--walltime-margin", type=_seconds, default=60.0, metavar="SECONDS",
        help="stop the script or JupyterLab, as SIGTERM does, this long before the "
        "walltime ends (default 60)",
    )
    group.add_argument(
        "-v", "--verbose", action="store_true", help="show Dask's INFO logs here too"
    )


def add_plan_options(group: Any) -> None:
    group.add_argument("--plan", action="store_true", help="print the layout plan and exit")
    group.add_argument(
        "--launch-command", action="store_true",
        help="print only the launch command that fits this job and this machine's MPI "
        "(srun in a Slurm job), as a batch script runs it, and exit",
    )
    group.add_argument("--nodes", type=_node_count, default=1, metavar="N",
                       help="nodes in the job (default 1)")
    group.add_argument("-np", "--ranks", type=_rank_count, metavar="N",
                       help="ranks mpirun would start (default: the count that fits)")
    group.add_argument("--hostfile", type=_path_text, metavar="FILE",
                       help="the job's node file, for the launch lines (default: $NODEFILE)")


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """Parse the command line; raise LaunchError with one line for a bad one."""
    args = build_parser().parse_args(argv)
    if args.join and args.script:
        raise LaunchError(f"--join adds workers only, and runs no script: drop {args.script}, "
                          "and run it in the job you join")
    # The driver's part (the Python API: its caller's); a joining job has none.
    args.jupyterlab = args.script is None and args.join is None
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
