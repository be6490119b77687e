"""Each process's log: Dask's INFO in a user-only file, warnings and errors on
the terminal in one line each."""
from __future__ import annotations

import atexit
import logging
import os
import sys
import time
from pathlib import Path
from typing import TextIO

import dask


class OneLineFormatter(logging.Formatter):
    """A record in one line: its traceback stays in the log file, named instead."""

    def __init__(self, fmt: str, log_file: str | Path) -> None:
        super().__init__(fmt)
        self.log_file = log_file

    def format(self, record: logging.LogRecord) -> str:
        bare = logging.makeLogRecord(
            {**record.__dict__, "exc_info": None, "exc_text": None, "stack_info": None}
        )
        # Warnings captured from libraries come in several lines, their source last.
        line = " ".join(part.strip() for part in super().format(bare).splitlines() if part.strip())
        return f"{line} (traceback in {self.log_file})" if record.exc_info else line


class CountedOnTerminal(logging.Filter):
    """Failed TLS handshakes on the terminal as a count, at most one line an
    interval: anyone on the node can open a connection to the scheduler's
    port, and distributed warns of each (its details stay in the log file).
    The first is said at once; those after it once ``interval`` seconds have
    passed since the last line, and at the end."""

    LOGGER, MESSAGE = "distributed.comm.tcp", "TLS handshake failed"

    def __init__(self, handler: logging.Handler, log_file: str | Path, interval: float) -> None:
        super().__init__()
        self.handler, self.log_file, self.interval = handler, log_file, interval
        self.count, self.said_at = 0, None  # failures not yet said; when the last line was
        atexit.register(self.say_the_rest)

    def filter(self, record: logging.LogRecord) -> bool:
        if record.name != self.LOGGER or self.MESSAGE not in str(record.msg):
            return True
        self.count += 1
        now = time.monotonic()
        if self.said_at is None or now - self.said_at >= self.interval:
            self.say(record.levelno)
        return False

    def say(self, level: int = logging.WARNING) -> None:
        what = (f"a connection without the job's certificate was refused (TLS handshake "
                f"failed); any more are counted here, at most once every {self.interval:g} s"
                if self.said_at is None else
                f"{self.count} more connection(s) without the job's certificate were refused "
                "(TLS handshake failed)")
        self.count, self.said_at = 0, time.monotonic()
        self.handler.handle(logging.makeLogRecord({
            "name": "start_daskmpi", "levelno": level, "levelname": logging.getLevelName(level),
            "msg": f"{what}; each is in {self.log_file}",
        }))

    def say_the_rest(self) -> None:
        if self.count:
            self.say()


FLOOD_INTERVAL = 60.0  # seconds between two lines that count refused connections


def open_private(path: str | Path) -> TextIO:
    """``path`` for appending, user-only from its creation on, never through a
    link: the log folder is private (places.private_dir), so what is in it is
    this user's."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_NOFOLLOW, 0o600)
    return os.fdopen(fd, "a", buffering=1)


OURS = "start_daskmpi"  # our handlers' name, to tell them from a user's
# distributed's default logging config gives these (and their children named
# there) a stderr handler at import; a user's own loggers are left alone.
DASK_LOGGER_ROOTS = ("distributed", "bokeh", "tornado")


def dask_loggers() -> list[logging.Logger]:
    # A copy, made in one step: the scheduler's rank imports modules on another
    # thread meanwhile (servers.scheduler_modules), and each new logger they
    # create would change the dict under a loop over it.
    known = logging.Logger.manager.loggerDict.copy()
    return [
        logger for name, logger in known.items()
        if isinstance(logger, logging.Logger) and name.split(".")[0] in DASK_LOGGER_ROOTS
    ]


def log_to_file(path: str | Path, verbose: bool) -> None:
    """INFO and up to ``path``; the terminal gets warnings and errors only, each
    in one line, unless verbose.  Replaces the stderr handlers distributed
    installs at import.  A setup of the root logger found here is the user's
    (a script calling initialize() after logging.basicConfig()): its handlers
    stay, in place of the terminal's, and keep showing what they showed."""
    log_format = dask.config.get("distributed.admin.log-format")
    to_file = logging.StreamHandler(open_private(path))
    to_file.setLevel(logging.INFO)
    to_file.setFormatter(logging.Formatter(log_format))
    to_terminal = logging.StreamHandler(sys.stderr)
    to_terminal.setLevel(logging.INFO if verbose else logging.WARNING)
    to_terminal.setFormatter(
        logging.Formatter(log_format) if verbose else OneLineFormatter(log_format, path)
    )
    to_terminal.addFilter(CountedOnTerminal(to_terminal, path, FLOOD_INTERVAL))
    for handler in (to_file, to_terminal):
        handler.set_name(OURS)
    for logger in dask_loggers():
        logger.handlers.clear()
        logger.propagate = True
    root = logging.getLogger()
    theirs = [handler for handler in root.handlers if handler.get_name() != OURS]
    for handler in theirs:
        if handler.level == logging.NOTSET:  # it showed what the root's level let through
            handler.setLevel(root.level)
    root.handlers[:] = [to_file, *(theirs or [to_terminal])]
    root.setLevel(logging.INFO)
    logging.captureWarnings(True)
