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


def log_to_file(path: str | Path, verbose: bool) -> None:
    """INFO and up to ``path``; the terminal gets warnings and errors only, each
    in one line, unless verbose.  Replaces the stderr handlers distributed
    installs at import."""
    log_format = dask.config.get("distributed.admin.log-format")
    to_file = logging.StreamHandler(open_private(path))
    to_file.setLevel(logging.INFO)
    to_file.setFormatter(logging.Formatter(log_format))
    to_terminal = logging.StreamHandler(sys.stderr)
    to_terminal.setLevel(logging.INFO if verbose else logging.WARNING)
    to_terminal.setFormatter(
        logging.Formatter(log_format) if verbose else OneLineFormatter(log_format, path)
    )
    for existing in logging.Logger.manager.loggerDict.values():
        if isinstance(existing, logging.Logger) and existing.handlers:
            existing.handlers.clear()
            existing.propagate = True
    root = logging.getLogger()
    root.handlers[:] = [to_file, to_terminal]
    root.setLevel(logging.INFO)
    logging.captureWarnings(True)
