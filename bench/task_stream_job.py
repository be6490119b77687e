"""Run a cupy_test (the path given first) on the launcher's cluster, then print
where its workers' time went, from the scheduler's task stream, in one line:

    TASK_STREAM {"WORKER": {"tasks": N, "compute": S, "transfer": S, "span": S}, ...}

``compute`` and ``transfer`` are the seconds the worker spent running tasks and
receiving their inputs from other workers; ``span`` runs from its first start to
its last stop.  With CuPy, a task's compute time is its kernels' launch, not
their run, unless the launch queue is full: read the spans and counts.
"""
from __future__ import annotations

import importlib.util
import json
import sys
from collections import defaultdict

import cloudpickle
from distributed import get_client, get_task_stream


def summary(stream: list[dict]) -> dict[str, dict[str, float]]:
    workers: dict[str, dict[str, float]] = defaultdict(
        lambda: {"tasks": 0, "compute": 0.0, "transfer": 0.0, "first": float("inf"), "last": 0.0}
    )
    for task in stream:
        seen = workers[task["worker"]]
        seen["tasks"] += 1
        for step in task["startstops"]:
            if step["action"] in ("compute", "transfer"):
                seen[step["action"]] += step["stop"] - step["start"]
            seen["first"] = min(seen["first"], step["start"])
            seen["last"] = max(seen["last"], step["stop"])
    return {
        name: {"tasks": w["tasks"], "compute": round(w["compute"], 3),
               "transfer": round(w["transfer"], 3), "span": round(w["last"] - w["first"], 3)}
        for name, w in sorted(workers.items())
    }


def main() -> int:
    path, *argv = sys.argv[1:]
    spec = importlib.util.spec_from_file_location("cupy_test", path)
    cupy_test = importlib.util.module_from_spec(spec)
    sys.modules["cupy_test"] = cupy_test
    spec.loader.exec_module(cupy_test)
    cloudpickle.register_pickle_by_value(cupy_test)  # the workers need not import it
    get_client()
    with get_task_stream() as stream:
        status = cupy_test.main(argv)
    print("TASK_STREAM " + json.dumps(summary(stream.data)), flush=True)
    return status


if __name__ == "__main__":
    sys.exit(main())
