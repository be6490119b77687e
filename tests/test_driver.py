"""The driver runs the script as `python script.py` would, and closes what it left open."""
from __future__ import annotations

import sys
import textwrap
import weakref

import pytest
from distributed import Client

from start_daskmpi.driver.job import close_clients_left_open
from start_daskmpi.driver.script import exit_status, run_script


def write(tmp_path, body: str, name: str = "job.py"):
    path = tmp_path / name
    path.write_text(textwrap.dedent(body))
    return path


def test_script_runs_as_main_with_its_own_argv_and_folder_first(tmp_path, capsys):
    (tmp_path / "helper.py").write_text("VALUE = 'from the script folder'\n")
    script = write(
        tmp_path,
        """
        import sys, helper
        print(__name__, sys.argv, sys.path[0], helper.VALUE)
        """,
    )
    argv, path = list(sys.argv), list(sys.path)
    assert run_script(str(script), ["--size", "3"]) == 0
    assert capsys.readouterr().out.split(" ", 1) == [
        "__main__",
        f"{[str(script), '--size', '3']} {tmp_path} from the script folder\n",
    ]
    assert sys.argv == argv and sys.path == path


@pytest.mark.parametrize(
    "body, status, stderr",
    [
        ("pass", 0, ""),
        ("import sys; sys.exit()", 0, ""),
        ("import sys; sys.exit(0)", 0, ""),
        ("import sys; sys.exit(3)", 3, ""),
        ("raise SystemExit(7)", 7, ""),
        ("import sys; sys.exit('fatal: no input')", 1, "fatal: no input\n"),
    ],
)
def test_exit_status_is_pythons(tmp_path, capsys, body, status, stderr):
    assert run_script(str(write(tmp_path, body)), []) == status
    assert capsys.readouterr().err == stderr


def test_traceback_starts_in_the_script(tmp_path, capsys):
    script = write(
        tmp_path,
        """
        def inner():
            raise ValueError("bad value")

        inner()
        """,
    )
    assert run_script(str(script), []) == 1
    err = capsys.readouterr().err
    assert err.startswith("Traceback (most recent call last):\n")
    assert err.count("Traceback") == 1
    assert f'File "{script}", line 5, in <module>' in err
    assert "runpy" not in err and "start_daskmpi" not in err
    assert err.rstrip().endswith("ValueError: bad value")


def test_interrupts_give_the_status_a_shell_reports(tmp_path, capsys):
    assert run_script(str(write(tmp_path, "raise KeyboardInterrupt")), []) == 130
    assert "Interrupted (SIGINT)" in capsys.readouterr().out
    terminated = "from start_daskmpi.driver.script import Terminated\nraise Terminated"
    assert run_script(str(write(tmp_path, terminated)), []) == 143
    assert "Interrupted (SIGTERM)" in capsys.readouterr().out


def test_exit_status_of_odd_codes(capsys):
    assert exit_status(None) == 0
    assert exit_status(4) == 4
    assert exit_status(["not", "an", "int"]) == 1
    assert capsys.readouterr().err == "['not', 'an', 'int']\n"


def test_a_hard_exit_is_not_turned_into_another_end_while_it_waits(monkeypatch):
    """The script's os._exit(3) waits for the other ranks to leave; the scheduler
    closes meanwhile, and the driver's watcher signals SIGTERM to interrupt the
    script as 'lost the scheduler'.  That must not change the job's end: it is
    os._exit's 3 (CI's floors once ended with 1, 48 s later)."""
    import os
    import signal

    from start_daskmpi.mpi import ending as mpi

    ended = []

    class Exited(Exception):
        pass

    class SchedulerLost(Exception):  # the real one, a KeyboardInterrupt, would stop pytest
        pass

    def exit_together(world, status, hosts, driver):
        os.kill(os.getpid(), signal.SIGTERM)  # the watcher, while the ranks leave

    def c_exit(status):  # libc's: would end pytest
        ended.append(status)
        raise Exited

    def lost(signum, frame):
        raise SchedulerLost("lost the scheduler")

    monkeypatch.setattr(mpi, "exit_together", exit_together)
    monkeypatch.setattr(mpi, "send_to_all", lambda *args: None)
    monkeypatch.setattr(mpi, "exit_past_python", c_exit)
    previous = signal.signal(signal.SIGTERM, lost)
    try:
        with pytest.raises(Exited), mpi.hard_exit_ends_the_job(None, [], ended.append):
            os._exit(3)
    finally:
        signal.signal(signal.SIGTERM, previous)
    assert ended == [3, 3]  # recorded, then the process's exit status


def test_a_signal_to_the_driver_is_noted_for_the_end():
    """SIGTERM and Ctrl-C: the other ranks then wait for the driver's word a
    bounded time only, which what the driver says at the end must know."""
    import signal

    from start_daskmpi.driver import script

    try:
        with pytest.raises(script.Terminated):
            script.raise_terminated(signal.SIGTERM, None)
        assert script.SIGNALLED.is_set()
        script.SIGNALLED.clear()
        with pytest.raises(KeyboardInterrupt):
            script.raise_interrupted(signal.SIGINT, None)
        assert script.SIGNALLED.is_set()
    finally:
        script.SIGNALLED.clear()


def test_the_scheduler_gone_after_a_signal_is_the_grace_run_out(tmp_path):
    from types import SimpleNamespace

    from start_daskmpi.driver.job import scheduler_lost

    info = SimpleNamespace(host="n1")
    assert scheduler_lost(info, tmp_path, signalled=False) == (
        f"lost the scheduler (rank 0 on n1): the job ends; see {tmp_path / 'rank0-scheduler.log'}"
    )
    assert scheduler_lost(info, tmp_path, signalled=True) == (
        "the scheduler and workers left 25 s after the job was signalled, the script still "
        "running: the job ends; after a signal (a walltime), a script's finally gets 25 s"
    )


def test_a_client_that_fails_to_close_leaves_the_jobs_verdict_alone(monkeypatch, caplog):
    """Its scheduler closed under it, a TLS client may raise as it closes
    (distributed 2024.8), or wait twice its timeout: the driver's line about
    the lost scheduler, made before, must not give way to that error or wait."""
    class Reconnecting:
        status = "connecting"

        def close(self, timeout):
            raise ValueError("IOStream is not idle; cannot convert to SSL")

    class Closing:
        closed = False

        def close(self, timeout):
            assert timeout is not None  # a close must not wait on a lost scheduler for minutes
            self.closed = True

    clients = [Reconnecting(), Closing()]
    monkeypatch.setattr(Client, "_instances", weakref.WeakSet(clients))
    with caplog.at_level("INFO", logger="start_daskmpi"):
        close_clients_left_open()
    assert clients[1].closed and "closing a client failed" in caplog.text
    assert clients[0].status == "closed"  # its finalizer must not close it, unbounded
