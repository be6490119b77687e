"""The driver: the client side of the job.  It connects, waits for every
worker, prints where things are, then runs the script, or JupyterLab until
'stop', and ends the run with one line once the scheduler is gone."""
from __future__ import annotations

import contextlib
import getpass
import logging
import os
import socket
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import dask
from distributed import Client, Security

from start_daskmpi.driver.client_files import CLIENT_ENV, client_env_text, scheduler_file_text
from start_daskmpi.driver.jupyterlab import serve_jupyterlab
from start_daskmpi.driver.registration import Registration, min_workers
from start_daskmpi.driver.script import (
    SIGNALLED,
    SchedulerLost,
    main_interrupted_when,
    run_script,
)
from start_daskmpi.driver.walltime import deadline_of_this_job, stopped_before_walltime
from start_daskmpi.errors import LaunchError, report, warn
from start_daskmpi.mpi.world import SIGNAL_GRACE
from start_daskmpi.plan.banners import ROUTE_HINT, connection_banner, dashboard_link
from start_daskmpi.plan.config import Config
from start_daskmpi.plan.layout import SCHEDULER_RANK, Layout, Role
from start_daskmpi.plan.node import short_hostname
from start_daskmpi.plan.sites import route_is_a_guess, ssh_route
from start_daskmpi.security.ownership import remove_own_file, write_own_file
from start_daskmpi.security.private import remove_private, write_private
from start_daskmpi.security.tls import Credentials, security_from, write_client_credentials
from start_daskmpi.servers.info import SchedulerInfo

logger = logging.getLogger("start_daskmpi")

SCHEDULER_LOST_GRACE = 5.0  # seconds the driver's client may be without its scheduler
WATCH_INTERVAL = 0.5  # seconds between looks at the client's status
# Seconds a client may take to close: milliseconds when its scheduler is there;
# one reconnecting to a scheduler that closed would wait out twice its timeout.
CLIENT_CLOSE_TIMEOUT = 10.0


def point_clients_here(job: Job, client: Client) -> None:
    """Make ``Client()`` with no arguments reach this cluster, with the driver's
    credentials: here, in the script's subprocesses, in JupyterLab's kernels,
    and in another shell of the user's that sources ``client.env`` (files in
    the driver's private folder, which Job.record_and_clean_up removes); and write
    --scheduler-file, which names that client.env for --join and connect()."""
    folder = job.client_folder
    folder.mkdir(mode=0o700)
    variables = {"DASK_SCHEDULER_ADDRESS": job.info.address}
    if job.info.dashboard is not None:  # Client().dashboard_link: through the printed tunnel
        variables["DASK_DISTRIBUTED__DASHBOARD__LINK"] = dashboard_link(job.info.dashboard)
    if job.credentials is not None:
        logger.info("the client's credentials, for the script and JupyterLab's kernels: %s",
                    folder)
        variables.update(write_client_credentials(job.credentials, folder))
    write_private(folder / CLIENT_ENV, client_env_text(variables))
    os.environ.update(variables)
    dask.config.update(dask.config.config, dask.config.collect_env(variables))
    if job.config.run.scheduler_file:
        identity = client.scheduler_info(n_workers=0)
        text = scheduler_file_text({k: v for k, v in identity.items() if k != "workers"},
                                   folder / CLIENT_ENV)
        write_own_file(Path(job.config.run.scheduler_file), text, "--scheduler-file")
        job.scheduler_file = Path(job.config.run.scheduler_file)


def close_clients_left_open() -> None:
    """Close the driver's client and those the script did not close (they would
    retry, loudly, once the cluster is gone), each within a bound."""
    # distributed has no public registry of a process's clients; Client._instances,
    # a WeakSet of every live Client, has held them since distributed 1.x.
    for client in list(Client._instances):
        try:
            client.close(timeout=CLIENT_CLOSE_TIMEOUT)
        except Exception:  # its scheduler gone: the verdict already made stands
            # A client caught reconnecting to a closed TLS scheduler raises here
            # (distributed 2024.8: "IOStream is not idle") or times out.
            logger.info("closing a client failed", exc_info=True)
            # Else its finalizer closes it again, without a bound: Client.__del__
            # closes every client whose status is not "closed".
            client.status = "closed"


@contextlib.contextmanager
def ended_if_scheduler_lost(client: Client, info: SchedulerInfo, log_dir: Path) -> Iterator[None]:
    """End the run with one line once the scheduler is gone: the script's
    futures fail, but a script busy elsewhere, or JupyterLab, would go on until
    the walltime.  Where mpirun kills every rank as soon as one dies (MPICH,
    Open MPI), this has no time to act; where it does not (srun without
    --kill-on-bad-exit), or where the scheduler closed itself, it ends the job."""

    def gone_for_good(done: threading.Event) -> bool:
        gone_since = None
        while not done.wait(WATCH_INTERVAL):
            if client.status == "running":
                gone_since = None
            elif gone_since is None:
                gone_since = time.monotonic()
            elif time.monotonic() - gone_since > SCHEDULER_LOST_GRACE:
                return True
        return False

    def interruption() -> SchedulerLost:  # said as it comes: a signal may have come first
        return SchedulerLost(scheduler_lost(info, log_dir, SIGNALLED.is_set()))

    with main_interrupted_when(gone_for_good, interruption, "watch the scheduler") as lost:
        try:
            yield
        finally:
            if client.status != "running":
                # Closing a client that still tries to reconnect logs a traceback per try.
                logging.getLogger("distributed.client").setLevel(logging.CRITICAL)
    if client.status != "running" and not lost.is_set():  # the script's futures failed first
        raise interruption()


def scheduler_lost(info: SchedulerInfo, log_dir: Path, signalled: bool) -> str:
    """Why the scheduler is gone: after a signal, the other ranks' grace ran out
    while the script went on (its finally, say); else see its log."""
    if signalled:
        return (
            f"the scheduler and workers left {SIGNAL_GRACE:g} s after the job was signalled, "
            f"the script still running: the job ends; after a signal (a walltime), a "
            f"script's finally gets {SIGNAL_GRACE:g} s"
        )
    return (
        f"lost the scheduler (rank {SCHEDULER_RANK} on {info.host}): the job ends; "
        f"see {log_dir / f'rank{SCHEDULER_RANK}-scheduler.log'}"
    )


@dataclass
class Job:
    """What the driver knows of the job it drives."""

    config: Config
    info: SchedulerInfo
    layout: Layout
    log_dir: Path
    credentials: Credentials | None  # the driver's own
    private: Path  # the driver's private folder: its client's credentials, as files
    # Set once enough workers have registered (--min-workers): from then on, one
    # that came and leaves for good was lost, not failed to start.
    workers_came: threading.Event = field(default_factory=threading.Event)
    registration: Registration | None = None
    scheduler_file: Path | None = None  # --scheduler-file, once written

    @property
    def security(self) -> Security:
        return security_from(self.credentials)

    @property
    def client_folder(self) -> Path:
        """The client's credentials and client.env, while the job runs."""
        return self.private / "client"

    def workers_seen(self) -> list[Role]:
        """The planned workers that registered at some point."""
        came = self.registration.came if self.registration else set()
        return [role for role in self.layout.workers if str(role.name) in came]

    def record_and_clean_up(self, code: int) -> None:
        """Leave what the job leaves once its status is known: the status, for
        a batch script; no client connected (the script's os._exit ends the job
        from inside the script, its clients open: the scheduler, closing, would
        wait for them); no scheduler file; no credentials on the node."""
        record_status(self.config, code)
        close_clients_left_open()
        if self.scheduler_file is not None:
            why = remove_own_file(self.scheduler_file)
            if why:
                warn(f"--scheduler-file {self.scheduler_file} was not removed: {why}")
        remove_private(self.client_folder)


def run_script_session(job: Job, route: list[str]) -> int:
    print(connection_banner(job.info.dashboard, route))
    print(flush=True)
    code = run_script(job.config.run.script, job.config.run.script_args)
    print("Code ran successfully." if code == 0 else f"Code failed with exit status {code}.")
    return code


@contextlib.contextmanager
def connected(job: Job) -> Iterator[tuple[Client, list[str]]]:
    """Connect, wait for enough workers and print where things are; yields the
    driver's client and the SSH route to the scheduler's node.  While in it,
    a scheduler gone for good and the walltime interrupt the main thread.
    Raises LaunchError for what stops the job before it starts."""
    config, info = job.config, job.info
    print(f"Scheduler address: {info.address} on node {info.host}")
    print("Starting the workers")
    notes = list(job.layout.notes)
    if not config.network.tls:
        notes.append(
            f"--no-tls: anyone who can reach {info.address} can run code as you on this "
            "cluster; use it only on a network where you trust every user"
        )
    for note in notes:
        print(f"start_daskmpi: warning: {note}", file=sys.stderr)
    end = deadline_of_this_job(config.run.walltime)  # checked in the preflight (checks.py)
    try:
        client = Client(info.address, timeout=config.run.startup_timeout, security=job.security)
    except OSError as e:
        raise LaunchError(
            f"cannot reach the scheduler at {info.address} ({e}): check --interface"
        ) from None
    late = threading.Event()  # set: stop watching for late workers
    try:
        # Not `with client`: its close may raise or wait minutes for a scheduler
        # that closed; close_clients_left_open bounds it.
        with ended_if_scheduler_lost(client, info, job.log_dir), \
                stopped_before_walltime(end, config.run.walltime_margin):
            point_clients_here(job, client)
            job.registration = Registration(client, job.layout.workers, job.log_dir)
            late_until = time.monotonic() + config.run.startup_timeout
            need = min_workers(config.run.min_workers, len(job.layout.workers))
            job.registration.wait(need, config.run.startup_timeout)
            job.workers_came.set()
            print(f"Client status: {client}")
            if job.registration.missing():
                print(f"Workers: {len(job.registration.came)} of {len(job.layout.workers)} "
                      f"registered (--min-workers {need}); the others join as they come")
                job.registration.watch_late(late_until, late)
            print(f"Logs: {job.log_dir}")
            print(another_client(job))
            if route_is_a_guess(config.network.ssh_hops, info.host, info.fqdn):
                print(ROUTE_HINT)
            if end is not None:
                print(f"Walltime: the job ends at {end.describe()}; Dask stops "
                      f"{config.run.walltime_margin:g} s before (--walltime-margin)")
            print()
            yield client, ssh_route(config.network.ssh_hops, info.host, info.fqdn,
                                    getpass.getuser())
    finally:
        late.set()
        close_clients_left_open()


def another_client(job: Job) -> str:
    """How another process of the user's on this node reaches the cluster: a
    shell that sources client.env, then Client(); or, in Python, connect()."""
    env = job.client_folder / CLIENT_ENV
    given = job.config.run.scheduler_file or env
    return (f"Another client of yours, from a shell on {short_hostname()}: . {env}, then "
            f"Client(); or, in Python: from start_daskmpi import connect; "
            f"client = connect({str(given)!r})")


def do_the_work(job: Job, client: Client, to_scheduler: list[str]) -> int:
    """Run the script on the cluster, or JupyterLab until 'stop'; the status."""
    if not job.config.run.jupyterlab:
        return run_script_session(job, to_scheduler)
    to_here = ssh_route(job.config.network.ssh_hops, short_hostname(), socket.getfqdn(),
                        getpass.getuser())
    return serve_jupyterlab(job.config, client, job.info, (to_here, to_scheduler),
                            job.log_dir, job.private)


def record_status(config: Config, code: int) -> None:
    """The job's status in --status-file, for a batch script to trust over its
    MPI launcher's; written before the ranks end, which a launcher may kill."""
    if config.run.status_file is None:
        return
    try:
        write_own_file(config.run.status_file, f"{code}\n", "--status-file")
    except LaunchError as e:
        report(str(e))
