"""The end of the job, for every rank of every mode: the driver's word to all
(first, the end at once where workers were lost with their node), a rank
lost, and every rank leaving MPI together."""
from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import Any, NoReturn

from start_daskmpi.driver.job import Job
from start_daskmpi.errors import report
from start_daskmpi.lifecycle.liveness import end_at_once_if_workers_were_lost
from start_daskmpi.mpi.ending import LEAVE_GRACE, abort, exit_together, leave_without_teardown
from start_daskmpi.mpi.world import TAG_END, RankLost, send_to_all
from start_daskmpi.plan.layout import DRIVER_RANK, SCHEDULER_RANK


def tell_every_rank_the_end(world: Any, job: Job, code: int) -> None:
    """Tell every rank the job is over, with the script's status; first, end
    it at once where workers were lost with their node."""
    try:
        if job.workers_came.is_set():
            end_at_once_if_workers_were_lost(world, job.workers_seen(), job.info.address,
                                             job.security, code)
    finally:
        send_to_all(world, code, TAG_END)  # every rank waits for this word


def ended_if_a_rank_is_lost(world: Any, hosts: Sequence[str], serve: Callable[[], int]) -> int:
    """``serve()``'s status; where it finds a rank lost, the job ends here."""
    try:
        return serve()
    except RankLost as e:
        abort_for_a_lost_rank(world, e.rank, hosts)


def abort_for_a_lost_rank(world: Any, rank: int, hosts: Sequence[str]) -> NoReturn:
    """A rank died (the driver, say) under a launcher that keeps the others
    running: the scheduler's rank says so once and ends the job; another rank
    that saw it first gives the scheduler's rank a moment to."""
    if world.rank == SCHEDULER_RANK:
        what = "driver" if rank == DRIVER_RANK else f"rank {rank}"
        where = hosts[rank] if rank < len(hosts) else "its node"
        report(f"lost the {what} (rank {rank} on {where}): the job ends")
    else:
        time.sleep(LEAVE_GRACE)
    abort(world, 1)


def leave_together(world: Any, code: int, hosts: Sequence[str], driver: int,
                   runs_the_script: bool) -> int:
    """This rank's status, once every rank has left MPI with it (bounded); a
    rank that runs none of the script leaves at once, without Python's
    teardown (mpi/ending.py)."""
    if exit_together(world, code, hosts, driver) and not runs_the_script:
        leave_without_teardown(code)
    return code
