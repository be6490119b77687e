"""Which planned workers have registered, and how long the driver waits for
them: every one by default; with --min-workers, the script starts once that
many have, the others join when they come, and those that never do (a slow
node, a worker that failed to start) are named in one line at
--startup-timeout while the job goes on."""
from __future__ import annotations

import asyncio
import math
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from distributed import Client

from start_daskmpi.errors import LaunchError, warn
from start_daskmpi.plan.layout import Role, format_ranks
from start_daskmpi.servers.info import FAILURES_TOPIC

POLL_INTERVAL = 1.0  # seconds between looks at the scheduler's workers


def min_workers(option: float | None, planned: int) -> int:
    """--min-workers as a count: a whole number as it is, a fraction of the
    planned workers rounded up; all of them where it is not given."""
    if option is None:
        return planned
    need = int(option) if option >= 1 else math.ceil(option * planned)
    if need > planned:
        raise LaunchError(
            f"--min-workers {option:g}, but the job plans {planned} worker(s): "
            "lower it, or start more ranks"
        )
    return need


def named(roles: Iterable[Role]) -> str:
    roles = list(roles)
    return (f"rank(s) {format_ranks(r.rank for r in roles)} "
            f"({', '.join(str(r.name) for r in roles)})")


@dataclass
class Registration:
    """The planned workers, those seen registered so far, and those whose
    start failed, by what the scheduler says."""

    client: Client
    planned: list[Role]
    log_dir: Path
    came: set[str] = field(default_factory=set)
    failed: list[str] = field(default_factory=list)  # each failure's message, once

    def look(self) -> list[str]:
        """Note who has registered; return the failures reported since the last look."""
        workers = self.client.scheduler_info(n_workers=-1)["workers"].values()
        self.came |= {str(w["name"]) for w in workers}
        reported = [message for _, message in self.client.get_events(FAILURES_TOPIC)]
        new = reported[len(self.failed):]
        self.failed = reported
        return new

    def missing(self) -> list[Role]:
        return [role for role in self.planned if str(role.name) not in self.came]

    def wait(self, need: int, timeout: float) -> None:
        """Return once ``need`` workers have registered; raise LaunchError where
        that can no longer be (failures, or the timeout), naming the missing."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                self.client.wait_for_workers(need, timeout=min(POLL_INTERVAL, timeout))
            except (TimeoutError, asyncio.TimeoutError):  # one and the same since 3.11
                pass
            failures = self.look()
            if len(self.came) >= need:
                for message in failures:
                    warn(f"{message}; the job goes on without it")
                return
            if failures and need == len(self.planned):
                raise LaunchError(f"{'; '.join(failures)}; see the logs in {self.log_dir}")
            if len(self.planned) - len(self.failed) < need:
                raise LaunchError(
                    f"{'; '.join(self.failed)}: fewer than --min-workers {need} can start; "
                    f"see the logs in {self.log_dir}"
                )
            for message in failures:
                warn(f"{message}; the job goes on without it")
            if time.monotonic() >= deadline:
                break
        missing = self.missing()
        beyond = f" (--min-workers {need})" if need < len(self.planned) else ""
        raise LaunchError(
            f"{len(missing)} of {len(self.planned)} workers did not register within "
            f"{timeout:g} s{beyond}: {named(missing)}; see their logs in {self.log_dir}"
        )

    def watch_late(self, until: float, stop: threading.Event) -> threading.Thread:
        """In a thread, until every planned worker came or ``until`` (monotonic):
        note late arrivals, say each failure, then name those that never came."""

        def watch() -> None:
            while self.missing() and time.monotonic() < until and not stop.is_set():
                stop.wait(POLL_INTERVAL)
                try:
                    for message in self.look():
                        warn(f"{message}; the job goes on without it")
                except Exception:  # the cluster is closing: nothing left to say
                    return
            if self.missing() and not stop.is_set():
                warn(f"{len(self.missing())} of {len(self.planned)} workers never "
                     f"registered: {named(self.missing())}; the job goes on with "
                     f"{len(self.came)}; see their logs in {self.log_dir}")

        thread = threading.Thread(target=watch, name="late workers", daemon=True)
        thread.start()
        return thread
