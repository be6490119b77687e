"""Mistakes a user can fix, and how they are said: one line, no traceback."""
from __future__ import annotations

import sys
from collections.abc import Callable
from typing import Any


class LaunchError(Exception):
    """A problem the user can fix; its message says how, in one line."""


def report(message: str) -> None:
    print(f"start_daskmpi: error: {message}", file=sys.stderr, flush=True)


def attempt(action: Callable[..., Any], *arguments: Any) -> tuple[Any, str | None]:
    """Run ``action``; a LaunchError becomes its message, to send to other ranks."""
    try:
        return action(*arguments), None
    except LaunchError as e:
        return None, str(e)
