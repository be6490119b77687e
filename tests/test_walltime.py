"""The job's end as each batch system gives it, and the stop before it (no MPI)."""
from __future__ import annotations

import json
import signal
import subprocess
import time

import pytest

from start_daskmpi.driver.script import Terminated
from start_daskmpi.driver.walltime import (
    Deadline,
    WalltimeReached,
    check_time_left,
    deadline,
    parse_clock,
    stop_at,
    stopped_before_walltime,
)
from start_daskmpi.errors import LaunchError
from start_daskmpi.plan.options import parse_args

STIME = "Fri Nov 27 20:00:00 2026"


def test_a_job_that_would_stop_as_it_starts_is_a_mistake():
    now = time.time()
    check_time_left(None, 60)
    check_time_left(Deadline(now + 61, "Slurm"), 60)
    with pytest.raises(LaunchError, match=r"ends at \d\d:\d\d:\d\d \(Slurm\), within "
                       r"--walltime-margin \(60 s\): lower the margin, or ask for a longer job"):
        check_time_left(Deadline(now + 59, "Slurm"), 60)


def qstat_answering(walltime: str):
    def qstat(command: list[str]) -> str:
        assert command == ["qstat", "-f", "-F", "json", "42.pbs"]
        return json.dumps({"Jobs": {"42.pbs": {
            "stime": STIME, "Resource_List": {"walltime": walltime, "select": "2:ngpus=4"},
        }}})
    return qstat


@pytest.mark.parametrize("text, seconds", [
    ("01:30:00", 5400), ("30:00", 1800), ("1:00:00:05", 86405), ("45", 45),
])
def test_walltimes_as_batch_systems_write_them(text, seconds):
    assert parse_clock(text) == seconds
    assert parse_args(["--walltime", text]).walltime == seconds


@pytest.mark.parametrize("text", ["1:xx", "1h:00", "-5", ""])
def test_what_is_no_walltime_is_refused(text):
    with pytest.raises(ValueError):
        parse_clock(text)


def test_the_option_takes_durations_too_and_the_margin_defaults_to_a_minute():
    args = parse_args(["--walltime", "90m"])
    assert args.walltime == 5400 and args.walltime_margin == 60
    with pytest.raises(LaunchError, match="expected a walltime such as 01:30:00"):
        parse_args(["--walltime", "1:xx"])


def test_each_batch_systems_end():
    assert deadline(None, 0, {"SLURM_JOB_END_TIME": "1800000000"}) == Deadline(1.8e9, "Slurm")
    assert deadline(None, 0, {"COBALT_ENDTIME": "1800000060"}) == Deadline(1.8e9 + 60, "Cobalt")
    started = time.mktime(time.strptime(STIME, "%a %b %d %H:%M:%S %Y"))
    pbs = deadline(None, 0, {"PBS_JOBID": "42.pbs"}, qstat_answering("01:00:00"))
    assert pbs == Deadline(started + 3600, "PBS")
    assert deadline(None, 0, {}) is None


def test_the_option_wins_and_counts_from_the_start():
    environ = {"SLURM_JOB_END_TIME": "1800000000"}
    assert deadline(600, 1000.0, environ) == Deadline(1600.0, "--walltime")


@pytest.mark.parametrize("qstat_fails", [
    subprocess.TimeoutExpired(["qstat"], 10), OSError("qstat not found"),
    subprocess.CalledProcessError(1, ["qstat"]),
])
def test_a_qstat_that_does_not_answer_gives_no_end(qstat_fails):
    def qstat(command):
        raise qstat_fails
    assert deadline(None, 0, {"PBS_JOBID": "42.pbs"}, qstat) is None
    assert deadline(None, 0, {"PBS_JOBID": "42.pbs"}, qstat_answering("soon")) is None


def test_the_stop_comes_the_margin_before_the_end():
    assert stop_at(Deadline(1000.0, "Slurm"), 60) == 940.0


@pytest.mark.timeout(30)
def test_the_stop_interrupts_the_main_thread_as_sigterm_does():
    """It ends a blocking wait and says why; a SIGTERM from outside before it
    stays a plain Terminated."""
    def driver_handler(signum, frame):
        raise Terminated

    previous = signal.signal(signal.SIGTERM, driver_handler)
    try:
        with pytest.raises(Terminated) as plain:
            with stopped_before_walltime(Deadline(time.time() + 600, "Slurm"), 60):
                signal.raise_signal(signal.SIGTERM)
        assert not isinstance(plain.value, WalltimeReached)
        with pytest.raises(WalltimeReached, match=r"walltime ends at .* \(Slurm\), in 1 s"):
            with stopped_before_walltime(Deadline(time.time() + 1.5, "Slurm"), 1):
                time.sleep(20)
        assert signal.getsignal(signal.SIGTERM) is driver_handler  # given back
    finally:
        signal.signal(signal.SIGTERM, previous)
