"""Tasks that ask for resources no worker of the cluster offers (GPU=1 on a
cluster of CPU workers, say): distributed keeps them waiting, in case such a
worker comes, and says nothing; here the scheduler's rank says so, in one
line, once for each set of resources asked for."""
from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from distributed import Scheduler, SchedulerPlugin

from start_daskmpi.errors import warn


def offers(resources: Mapping[str, float], wanted: Mapping[str, float]) -> bool:
    return all(resources.get(name, 0) >= amount for name, amount in wanted.items())


def what_they_offer(workers: Iterable[Mapping[str, float]]) -> str:
    """The resources the workers offer, as the user wrote them, e.g. ``GPU=1``."""
    offered = sorted({f"{name}={amount:g}" for resources in workers
                      for name, amount in resources.items()})
    return ", ".join(offered) or "none"


def unmet(key: str, wanted: Mapping[str, float], workers: list[Mapping[str, float]]) -> str:
    asked = ", ".join(f"{name}={amount:g}" for name, amount in sorted(wanted.items()))
    return (
        f"task {key} asks for resources {asked}, which none of the cluster's {len(workers)} "
        f"worker(s) offers (they offer: {what_they_offer(workers)}): it waits until a worker "
        "that does joins; GPU workers offer GPU=1 each, CPU workers none"
    )


class UnmetResources(SchedulerPlugin):
    """Watches tasks that find no worker; says which resources no one offers."""

    name = "start_daskmpi-unmet-resources"

    def __init__(self, scheduler: Scheduler) -> None:
        self.scheduler = scheduler
        self.said: set[frozenset[tuple[str, float]]] = set()

    def transition(self, key: Any, start: str, finish: str, *args: Any, **kwargs: Any) -> None:
        if finish != "no-worker":
            return
        task = self.scheduler.tasks.get(key)
        wanted = getattr(task, "resource_restrictions", None)
        if not wanted or frozenset(wanted.items()) in self.said:
            return
        workers = [dict(worker.resources) for worker in self.scheduler.workers.values()]
        if not any(offers(resources, wanted) for resources in workers):
            self.said.add(frozenset(wanted.items()))
            warn(unmet(str(key), wanted, workers))
