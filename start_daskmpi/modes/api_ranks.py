"""The ranks of dask-mpi's initialize() and execute() (modes/api.py), through
the command's own lifecycle: the client's rank is the job's driver
(DriverRank), while the rest of the user's script runs on it; every other
rank serves its role until the job ends, then returns or exits with it."""
from __future__ import annotations

import atexit
import os
import sys
import threading
from collections.abc import Callable, Sequence
from typing import Any, NoReturn

from start_daskmpi.driver.script import announce_interrupt, status_of_exit
from start_daskmpi.errors import API_MISTAKE, MISTAKE, LaunchError, report
from start_daskmpi.lifecycle.cluster import Cluster, prepare
from start_daskmpi.lifecycle.driver_rank import DriverRank
from start_daskmpi.lifecycle.ending import ended_if_a_rank_is_lost
from start_daskmpi.lifecycle.first_imports import import_for_the_role
from start_daskmpi.lifecycle.roles import serve_role
from start_daskmpi.mpi.ending import exit_past_python, exit_together, faults_end_the_job
from start_daskmpi.plan.banners import connection_banner
from start_daskmpi.plan.config import Config
from start_daskmpi.plan.layout import Role
from start_daskmpi.plan.node import raise_open_file_limit
from start_daskmpi.security.private import remove_private


def start_on(world: Any, config: Config, exit: bool,
             name_worker: Callable[[Role], Any]) -> ClientRank | None:
    """This rank's part of the cluster on ``world``: on the driver's rank, its
    ClientRank, once the cluster is up; on the others None, once the cluster
    has ended (with ``exit``, they exit with the job instead)."""
    global _client_rank
    if _client_rank is not None and not _client_rank.ended:
        raise RuntimeError("initialize() was called before in this process, and its cluster "
                           "still runs: call send_close_signal() first")
    raise_open_file_limit()
    import_for_the_role(config, world.rank, fork_this_process=False)  # MPI has started
    cluster = prepare(world, config, name_worker=name_worker)
    if cluster is None:
        raise SystemExit(API_MISTAKE)
    if world.rank == cluster.layout.driver_rank:
        _client_rank = ClientRank(world, cluster, exit)
        _client_rank.start()
        return _client_rank
    with faults_end_the_job(world):
        try:
            code = ended_if_a_rank_is_lost(world, cluster.hosts,
                                           lambda: serve_role(world, cluster))
        finally:
            remove_private(cluster.private)
    if exit:
        leave(world, code, cluster.hosts, cluster.layout.driver_rank)
    return None


def leave(world: Any, code: int, hosts: Sequence[str], driver: int) -> NoReturn:
    """End this process with the job, as a rank of the command does."""
    if not exit_together(world, code, hosts, driver):
        # A rank is gone: mpi4py's own MPI_Finalize at exit would wait for it forever.
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)
    raise SystemExit(code)


class ScriptStatus:
    """The status the script on the client's rank ends with, as far as Python
    shows it before the exit: ``sys.exit(n)`` and an uncaught exception (an
    interrupt said in one line, as the command says it).  A bare ``raise
    SystemExit(n)`` still ends the process, and so the job, with n."""

    def __init__(self) -> None:
        self.code = 0
        self.interrupted = False  # Python would exit 1, or by SIGINT: not the job's status
        self.plain_exit, self.plain_hook = sys.exit, sys.excepthook
        sys.exit, sys.excepthook = self.exit, self.excepthook

    def exit(self, code: object = None) -> NoReturn:
        if threading.current_thread() is threading.main_thread():  # elsewhere it ends a thread
            self.code = status_of_exit(code)
        self.plain_exit(code)

    def excepthook(self, kind: type[BaseException], error: BaseException, tb: Any) -> None:
        if isinstance(error, KeyboardInterrupt):
            self.code, self.interrupted = announce_interrupt(error), True
        else:
            self.code = 1
            self.plain_hook(kind, error, tb)

    def restore(self) -> None:
        sys.exit, sys.excepthook = self.plain_exit, self.plain_hook


class ClientRank:
    """The client's rank under initialize(): the job's driver (DriverRank, as
    under the command), while the rest of the script runs on it.  ``start``
    returns once enough workers registered; ``end`` (send_close_signal(), or
    the script's exit) ends the job."""

    def __init__(self, world: Any, cluster: Cluster, exit: bool) -> None:
        self.world, self.cluster, self.exit = world, cluster, exit
        self.driver = DriverRank(world, cluster)
        self.status: ScriptStatus | None = None
        self.ended = False
        self.job_status = 0  # what end() ended the job with

    def start(self) -> None:
        try:
            started = self.driver.start()
        except (LaunchError, KeyboardInterrupt) as e:
            if isinstance(e, LaunchError):
                report(str(e))
            self.end(announce_interrupt(e) if isinstance(e, KeyboardInterrupt) else 1)
            raise SystemExit(self.job_status) from None
        if started is None:  # every rank knows, and ends so, as under the command
            self.ended, self.job_status = True, self.driver.end(MISTAKE)
            self.leave_with_the_others(MISTAKE)
        _, route = started
        print(connection_banner(self.driver.job.info.dashboard, route))
        print(flush=True)
        self.status = ScriptStatus()
        atexit.register(self.end_at_exit)

    def end_at_exit(self) -> None:
        if self.ended:
            return
        self.end(self.status.code if self.status else 0)
        # With exit=False, MPI is the caller's to finalise, at its exit: no shortcut.
        if self.exit and self.status and (self.status.interrupted
                                          or self.status.code != self.job_status):
            sys.stdout.flush()
            sys.stderr.flush()
            exit_past_python(self.job_status)

    def end(self, code: int) -> None:
        """End the job with ``code``, once (DriverRank.end), and with exit=True
        leave MPI with the other ranks."""
        if self.ended:
            return
        self.ended = True
        if self.status is not None:
            self.status.restore()
        self.job_status = self.driver.end(code)
        if self.exit:
            exit_together(self.world, self.job_status, self.cluster.hosts,
                          self.cluster.layout.driver_rank)

    def leave_with_the_others(self, code: int) -> NoReturn:
        if self.exit:
            leave(self.world, code, self.cluster.hosts, self.cluster.layout.driver_rank)
        raise SystemExit(code)


_client_rank: ClientRank | None = None  # this process's, under initialize()


def client_rank() -> ClientRank | None:
    """This process's client rank, where initialize() made one."""
    return _client_rank
