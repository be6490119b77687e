"""The user's script, run as ``python script.py`` runs it (its argv, its folder
on sys.path, its exit status and traceback), and the interrupts that end it
early: Ctrl-C, SIGTERM, a scheduler gone for good."""
from __future__ import annotations

import contextlib
import os
import runpy
import signal
import sys
import threading
import traceback
from collections.abc import Callable, Iterator, Sequence
from typing import Any

from start_daskmpi.errors import report


class Terminated(KeyboardInterrupt):
    """SIGTERM (a walltime, a kill), raised in the driver as Ctrl-C raises
    KeyboardInterrupt, so that the script's ``finally`` blocks run; its text,
    where it has one, says why it came."""


class HungUp(Terminated):
    """SIGHUP, or the job's terminal gone (terminal.py): the job ends, as a
    shell's job does when its terminal closes (status 129)."""


class SchedulerLost(KeyboardInterrupt):
    """Raised in the driver, as a signal is, once its scheduler has gone for good."""


# Set once this process got SIGTERM or Ctrl-C: the other ranks, signalled too,
# now wait for the driver's word a bounded time only (mpi.SIGNAL_GRACE).
SIGNALLED = threading.Event()


def raise_terminated(signum: int, frame: Any) -> None:
    SIGNALLED.set()
    raise Terminated


def raise_hung_up(signum: int, frame: Any) -> None:
    SIGNALLED.set()
    raise HungUp


def raise_interrupted(signum: int, frame: Any) -> None:
    SIGNALLED.set()
    signal.default_int_handler(signum, frame)


@contextlib.contextmanager
def main_interrupted_when(
    fired: Callable[[threading.Event], bool], interruption: Callable[[], KeyboardInterrupt],
    name: str,
) -> Iterator[threading.Event]:
    """Run ``fired(done)`` in a thread named ``name`` (``done``: stop looking);
    where it returns True, interrupt the main thread as SIGTERM does, raising
    ``interruption()`` there.  A SIGTERM from outside goes to the handler there
    was, Terminated where none.  Yields the event set once it fired."""
    done, reached = threading.Event(), threading.Event()
    main = threading.main_thread().ident

    def watch() -> None:
        if fired(done):
            reached.set()
            # A real signal, not interrupt_main(): it also ends a blocking wait.
            signal.pthread_kill(main, signal.SIGTERM)

    def on_sigterm(signum: int, frame: Any) -> None:
        if reached.is_set():
            raise interruption()
        if not callable(previous):
            raise Terminated
        previous(signum, frame)

    previous = signal.signal(signal.SIGTERM, on_sigterm)
    watcher = threading.Thread(target=watch, name=name, daemon=True)
    watcher.start()
    try:
        yield reached
    finally:
        done.set()
        watcher.join()
        signal.signal(signal.SIGTERM, previous)


def announce_interrupt(error: KeyboardInterrupt) -> int:
    """Say what ended the run; return interrupt_status()."""
    if isinstance(error, SchedulerLost):
        report(str(error))
    else:
        signum = interrupted_by(error)
        print(f"\nInterrupted ({str(error) or signum.name}): stopping Dask", flush=True)
    return interrupt_status(error)


def interrupted_by(error: KeyboardInterrupt) -> signal.Signals:
    if isinstance(error, HungUp):
        return signal.SIGHUP
    return signal.SIGTERM if isinstance(error, Terminated) else signal.SIGINT


def interrupt_status(error: KeyboardInterrupt) -> int:
    """The job's status after ``error``: 128 + the signal, as a shell reports
    it; 1 for a scheduler lost."""
    return 1 if isinstance(error, SchedulerLost) else 128 + interrupted_by(error)


def exit_status(code: object) -> int:
    """The status ``sys.exit(code)`` gives a process, as the interpreter computes
    it, and prints a code that is not a number, as the interpreter does."""
    if code is not None and not isinstance(code, int):
        print(code, file=sys.stderr)
    return status_of_exit(code)


def status_of_exit(code: object) -> int:
    """exit_status() without the printing: where the interpreter prints."""
    if code is None:
        return 0
    return code if isinstance(code, int) else 1


def frames_from(tb: Any, filename: str) -> Any:
    """The traceback from the script's first frame on, as ``python script.py``
    shows it, without the launcher's and runpy's frames above it."""
    start = tb
    while tb is not None:
        if tb.tb_frame.f_code.co_filename == filename:
            return tb
        tb = tb.tb_next
    return start


def run_script(path: str, script_args: Sequence[str]) -> int:
    """Run ``path`` as ``__main__`` with its own argv and folder on sys.path;
    return the exit status ``python path`` would have."""
    script = os.path.abspath(path)
    saved_argv, saved_path = sys.argv, list(sys.path)
    sys.argv = [path, *script_args]
    sys.path.insert(0, os.path.dirname(script))
    try:
        runpy.run_path(script, run_name="__main__")
    except SystemExit as e:
        return exit_status(e.code)
    except KeyboardInterrupt as e:
        return announce_interrupt(e)
    except BaseException as e:
        traceback.print_exception(type(e), e, frames_from(e.__traceback__, script))
        return 1
    finally:
        sys.argv, sys.path[:] = saved_argv, saved_path
    return 0
