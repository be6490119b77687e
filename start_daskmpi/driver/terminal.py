"""The terminal 'stop' is typed in, in JupyterLab mode: which it is, whether
what is typed there can reach the job, and its hangup.

Under mpirun, mpirun reads the terminal and forwards it to rank 0; without,
the process reads it itself.  A process in the background of its terminal
(``mpirun ... &``, ``timeout`` without ``--foreground``) cannot read it:
Open MPI's mpirun then reads nothing, and 'stop' went unheard; and when the
terminal closed, the job went on, under init.  So the job says at its start
how to end it instead, and ends, as a shell's job does, when the terminal
hangs up.
"""
from __future__ import annotations

import contextlib
import os
import select
import sys
import threading
from collections.abc import Callable
from dataclasses import dataclass

import psutil

STOP, HANGUP = "stop", "hangup"  # what the watchers tell


@dataclass(frozen=True)
class Terminal:
    """The job's input, as the process that reads it for the job sees it."""

    reader: int  # the pid of the process that reads it: mpirun, or this one
    source: str | None  # what its stdin is: a terminal's device, /dev/null, a pipe
    tty: str | None  # the reader's terminal, where it has one
    foreground: bool  # the reader is in that terminal's foreground, where it may read it

    def unheard(self) -> str | None:
        """Why 'stop' cannot reach the job, and how to end it instead, in one
        line; None where it can (a terminal it may read, a pipe)."""
        if self.source == self.tty and self.tty and not self.foreground:
            why = (f"the job's launcher (pid {self.reader}) runs in the background of its "
                   f"terminal (started with &, or by timeout without --foreground): 'stop' "
                   "typed there does not reach it")
        elif self.source == os.devnull:
            why = f"the job's input is {os.devnull} (a batch job): 'stop' cannot reach it"
        else:
            return None
        ends = "; it stops when its terminal closes" if self.tty else ""
        return (f"{why}; stop Dask with File > Shut Down in JupyterLab, or kill -TERM "
                f"{self.reader}{ends}")


def foreground_group(tty: str) -> int | None:
    """The process group in the foreground of ``tty``; None if it cannot be told."""
    try:
        fd = os.open(tty, os.O_RDONLY | os.O_NOCTTY | os.O_NONBLOCK)
    except OSError:
        return None
    try:
        return os.tcgetpgrp(fd)
    except OSError:
        return None
    finally:
        os.close(fd)


def input_of(pid: int) -> str | None:
    try:
        return os.readlink(f"/proc/{pid}/fd/0")
    except OSError:
        return None


def this_jobs_terminal(under_a_launcher: bool) -> Terminal:
    """The input of the process that reads what is typed for the job: under a
    launcher, the nearest process above this one that has a terminal
    (mpirun: the ranks run in sessions of their own); without, this
    process.  Under a launcher with no terminal above (a remote node, a
    batch job), what feeds it cannot be told from here: nothing is said."""
    me = psutil.Process()
    for process in (me.parents() if under_a_launcher else [me]):
        with contextlib.suppress(psutil.Error):
            tty = process.terminal()
            if tty or not under_a_launcher:
                foreground = bool(tty) and foreground_group(tty) == os.getpgid(process.pid)
                return Terminal(process.pid, input_of(process.pid), tty, foreground)
    return Terminal(os.getppid(), None, None, False)


def watch(terminal: Terminal, on_word: Callable[[str], object]) -> None:
    """``on_word(STOP)`` once 'stop' comes on stdin (mpirun forwards it to rank
    0 only, so under MPI this runs there; stdin at EOF, a batch job's, never
    stops), unless it cannot come (a process in its terminal's background
    that read it would be stopped, by SIGTTIN); ``on_word(HANGUP)`` once the
    terminal hangs up."""
    def read() -> None:
        for line in sys.stdin:
            if line.strip().lower() == STOP:
                on_word(STOP)
                return
            print("Type 'stop' to stop Dask.", flush=True)

    if terminal.unheard() is None:
        threading.Thread(target=read, name="watch stdin for stop", daemon=True).start()
    if terminal.tty:
        threading.Thread(target=wait_for_hangup, args=(terminal.tty, on_word),
                         name="watch the terminal", daemon=True).start()


def wait_for_hangup(tty: str, on_word: Callable[[str], object]) -> None:
    """Every open descriptor of a terminal reports POLLHUP once it hangs up
    (its window closed, its ssh gone), whoever holds it."""
    try:
        fd = os.open(tty, os.O_RDONLY | os.O_NOCTTY | os.O_NONBLOCK)
    except OSError:
        return
    try:
        poller = select.poll()
        poller.register(fd, select.POLLHUP | select.POLLERR)
        while not poller.poll():
            pass
    finally:
        os.close(fd)
    on_word(HANGUP)
