"""Modules each Dask process imports before its server starts, so that the
user's first computation does not wait for them.

Measured on an H100 node (BENCHMARKS.md): ``import dask.array`` takes about 2 s
in a fresh process and CuPy's 0.5 s, and the scheduler (which unpickles each
graph) and every worker paid them inside the first call.

Never on a thread beside the server: a thread that imports a package while
another (a task, a graph being unpickled) imports one of its modules can
deadlock on Python's import locks, which Python breaks by handing one of them
a half-made module (a restarted GPU worker's first task failed so).  So each
process imports them in its one thread before its server exists: a nanny's
worker process as it begins (already done where its fork server imported
them), a rank before its role starts (lifecycle/first_imports.py).
"""
from __future__ import annotations

import importlib
import importlib.util
import logging
import sys
from collections.abc import Sequence

from start_daskmpi.errors import LaunchError

logger = logging.getLogger("start_daskmpi")

DEFAULT = ("dask.array",)
GPU_DEFAULT = ("cupy",)  # where it is installed, on GPU workers only


def modules_for(requested: Sequence[str] | None, gpu_worker: bool, has_cupy: bool) -> list[str]:
    """What a process pre-imports: the modules asked for, else the defaults."""
    if requested is not None:
        return list(requested)
    return [*DEFAULT, *(GPU_DEFAULT if gpu_worker and has_cupy else ())]


def installed(name: str) -> bool:
    """Whether ``name``'s top package is here, found without importing it."""
    top = name.partition(".")[0]
    if top in sys.modules:  # __main__ among them, whose spec may be None
        return True
    try:
        return importlib.util.find_spec(top) is not None
    except (ImportError, ValueError):
        return False


def check_modules(requested: Sequence[str] | None, host: str) -> None:
    """Each module asked for is installed here."""
    for name in requested or ():
        if not installed(name):
            raise LaunchError(
                f"--pre-import: no module named {name!r} on {host}: install it, or leave it out"
            )


def import_each(names: Sequence[str]) -> None:
    """Import each of ``names`` now, on this thread (none is imported twice)."""
    for name in names:
        try:
            importlib.import_module(name)
        except Exception as e:  # a module's own fault: the tasks that need it say more
            logger.warning("importing %s in advance failed: %s", name, e)
