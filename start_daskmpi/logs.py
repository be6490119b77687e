"""Each process's log: Dask's INFO in a user-only file, warnings and errors on
the terminal in one line each."""
from __future__ import annotations

import logging
import os
import sys
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
