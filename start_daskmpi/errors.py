"""Mistakes a user can fix, and how they are said: one line, no traceback."""
from __future__ import annotations

import sys
from collections.abc import Callable
from typing import Any

# A mistake's exit status: the command's, as argparse's; the Python API's,
# dask-mpi's, whose exceptions end the script with 1.
MISTAKE = 2
API_MISTAKE = 1


class LaunchError(Exception):
    """A problem the user can fix; its message says how, in one line."""

    def __init__(self, message: str) -> None:
        # A user's own text in it (a path with a newline, say) must not break the line.
        super().__init__(one_line(message))


def one_line(text: str) -> str:
    """``text`` with its control characters written as Python writes them."""
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)


def report(message: str) -> None:
    print(f"start_daskmpi: error: {message}", file=sys.stderr, flush=True)


def warn(message: str) -> None:
    print(f"start_daskmpi: warning: {message}", file=sys.stderr, flush=True)


def attempt(action: Callable[..., Any], *arguments: Any) -> tuple[Any, str | None]:
    """Run ``action``; a LaunchError becomes its message, to send to other ranks."""
    try:
        return action(*arguments), None
    except LaunchError as e:
        return None, str(e)
