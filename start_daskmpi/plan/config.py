"""A job's configuration: what the user asked for, frozen, in a few records
(workers, network, run), built from the command line or from the Python
API's keywords directly, each checked by the same table (options.py).
What is found at run time (the interface each node uses, its scratch, a
joining job's tag) lives in the cluster's own record, not here."""
from __future__ import annotations

import argparse
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

from start_daskmpi.errors import LaunchError
from start_daskmpi.plan.layout import Shape
from start_daskmpi.plan.options import BY_NAME, RUN, WORKERS, parse_args


@dataclass(frozen=True)
class Workers:
    """What every worker is: its threads and memory, where it spills, behind a
    nanny or not, what it runs and imports first, its GPU."""

    nthreads: int | None = None
    memory_limit: str = "auto"
    local_directory: str | None = None
    nanny: bool = True
    preload: tuple[str, ...] | None = None
    pre_import: tuple[str, ...] | None = None
    gpus_per_node: int | None = None
    rmm_pool_size: str | None = None
    device_memory_limit: str | None = None
    gpu_vendor: str | None = None
    require_gpu: bool = False
    # The Python API's alone: a Worker class of the user's (None: ours), and
    # keywords for every worker, as dask-mpi's initialize() takes them.
    worker_class: Any = None
    worker_options: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Network:
    """How the servers talk and where they listen; the tunnels printed."""

    interface: str | None = None  # as asked for; the one each node uses is the cluster's
    tls: bool = True
    protocol: str | None = None
    scheduler_port: int | None = None
    dashboard: bool = True
    dashboard_address: str | None = None
    jupyter_port: int | None = None
    ssh_hops: str | None = None


@dataclass(frozen=True)
class Run:
    """What the job runs, and for how long; where it writes."""

    script: str | None = None
    script_args: tuple[str, ...] = ()
    jupyterlab: bool = False  # no script, and not joining: JupyterLab until 'stop'
    scheduler_file: str | None = None
    join: Path | None = None
    log_dir: Path | None = None
    status_file: Path | None = None
    startup_timeout: float = 120.0
    min_workers: float | None = None
    walltime: float | None = None
    walltime_margin: float = 60.0
    verbose: bool = False


@dataclass(frozen=True)
class Config:
    workers: Workers = Workers()
    network: Network = Network()
    run: Run = Run()
    # Which processes the driver and the workers run in (dask-mpi's execute()
    # may share them); the command gives every role a rank of its own.
    shape: Shape = Shape()


RECORDS = {WORKERS: Workers, "network": Network, RUN: Run}


def record_fields(record: type) -> list[str]:
    return [f.name for f in fields(record)]


def frozen(value: Any) -> Any:
    return tuple(value) if isinstance(value, list) else value


def from_args(args: argparse.Namespace) -> Config:
    """The configuration the command line asks for."""
    given = vars(args)
    records = {group: record(**{name: frozen(given[name]) for name in record_fields(record)
                                if name in given})
               for group, record in RECORDS.items()}
    jupyterlab = args.script is None and args.join is None
    return Config(records[WORKERS], records["network"],
                  replace(records[RUN], jupyterlab=jupyterlab))


def from_argv(argv: Sequence[str] | None = None) -> Config:
    return from_args(parse_args(argv))


# Options that describe a run of the command, not a cluster: no keywords.
COMMAND_LINE_ONLY = ("script", "script_args", "plan", "launch_command", "nodes", "ranks",
                     "hostfile", "join")


def from_keywords(keywords: Mapping[str, Any], *, worker_class: Any = None,
                  worker_options: Mapping[str, Any] | None = None,
                  shape: Shape | None = None) -> Config:
    """The configuration the Python API's keywords ask for (the launcher's
    options by their long names), each checked as its option is."""
    given: dict[str, Any] = {}
    for name, value in keywords.items():
        if name in COMMAND_LINE_ONLY:
            raise LaunchError(f"{name} is an option of the command line only, not a keyword")
        if name not in BY_NAME:
            raise LaunchError(f"{name} is no option of the launcher (see --help)")
        if value is not None:  # None: the option's default, as when left out
            given[name] = BY_NAME[name].from_keyword(value)
    if given.get("tls", True) and given.get("protocol") not in (None, "tls"):
        raise LaunchError(f"protocol={given['protocol']!r} carries no TLS: add tls=False to "
                          "use it")
    namespace = parse_args([])  # every option's default, as the command line has it
    for name, value in given.items():
        setattr(namespace, name, value)
    config = from_args(namespace)
    return Config(replace(config.workers, worker_class=worker_class,
                        worker_options=dict(worker_options or {})),
                  config.network, replace(config.run, jupyterlab=False), shape or Shape())
