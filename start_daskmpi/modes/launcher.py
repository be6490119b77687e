"""The command under mpirun: each rank's part, by its role (rank 0 the
scheduler, rank 1 the driver, the others a worker each), ended together."""
from __future__ import annotations

from typing import Any

from start_daskmpi.driver.job import do_the_work
from start_daskmpi.driver.script import announce_interrupt
from start_daskmpi.errors import MISTAKE, LaunchError, report
from start_daskmpi.lifecycle.cluster import Cluster, prepare
from start_daskmpi.lifecycle.driver_rank import DriverRank
from start_daskmpi.lifecycle.ending import ended_if_a_rank_is_lost, leave_together
from start_daskmpi.lifecycle.roles import serve_role
from start_daskmpi.mpi.world import TAG_END, send_to_all
from start_daskmpi.plan.config import Config
from start_daskmpi.security.private import remove_private


def run_rank(world: Any, config: Config) -> int:
    """This rank's part of the job, ended together with the other ranks."""
    cluster = prepare(world, config)
    if cluster is None:
        return leave_together(world, MISTAKE, [], config.shape.driver_rank,
                              runs_the_script=world.rank == config.shape.driver_rank)
    try:
        code = ended_if_a_rank_is_lost(world, cluster.hosts, lambda: play(world, cluster))
    finally:
        remove_private(cluster.private)
    return leave_together(world, code, cluster.hosts, cluster.layout.driver_rank,
                          runs_the_script=cluster.role.kind == "driver")


def play(world: Any, cluster: Cluster) -> int:
    """This rank's role until the job ends: the driver's, or a server's."""
    if cluster.rank != cluster.layout.driver_rank:
        return serve_role(world, cluster)
    return drive(world, cluster)


def drive(world: Any, cluster: Cluster) -> int:
    """The driver: the script, or JupyterLab until 'stop', on the cluster; the
    job's status, which it tells every rank."""
    driver = DriverRank(world, cluster)
    code = 1
    try:
        started = driver.start()
        code = MISTAKE if started is None else do_the_work(driver.job, *started)
    except KeyboardInterrupt as e:
        code = announce_interrupt(e)
    except LaunchError as e:
        report(str(e))
    except BaseException:
        send_to_all(world, code, TAG_END)  # a fault of ours: the others must not wait
        raise
    return driver.end(code)
