"""Start -> every worker registered -> script done -> exit on 1, 2 and 3 simulated
nodes (tests/simcluster.py: network namespaces on a private bridge, MPICH's
mpiexec through an ssh stand-in), 2 CPU workers a node, TLS on.

    python bench/nodes.py [--nodes 1 2 3] [--repeat 3] [--out bench/results/nodes.json]

Needs root. The node counts are interleaved in each round; prints the median
of each and its ratio to one node. On one machine the simulated nodes share its
cores: the figures show what several nodes add (address choice, the reach check,
TCP between ranks), not what real nodes would give.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))
from simcluster import SimCluster  # noqa: E402

JOB = """
from distributed import Client
client = Client()
client.wait_for_workers({workers})
assert client.submit(sum, [1, 2]).result() == 3
"""
WORKERS_A_NODE = 2


def timed(cluster: SimCluster, job: Path, logs: Path) -> float:
    ranks = [WORKERS_A_NODE + 2] + [WORKERS_A_NODE] * (len(cluster.nodes) - 1)
    command = [str(Path(sys.executable).parent / "mpiexec"), *cluster.mpich(ranks),
               sys.executable, str(ROOT / "start_daskmpi.py"), "--log-dir", str(logs), str(job)]
    start = time.perf_counter()
    subprocess.run(command, check=True, timeout=300, capture_output=True,
                   env={**os.environ, **SimCluster.MPICH_ENVIRONMENT})
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--nodes", type=int, nargs="+", default=[1, 2, 3])
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    seconds: dict[int, list[float]] = {n: [] for n in args.nodes}
    with tempfile.TemporaryDirectory() as tmp:
        for round_ in range(args.repeat):
            for nodes in args.nodes:
                job = Path(tmp, f"job{nodes}.py")
                job.write_text(JOB.format(workers=nodes * WORKERS_A_NODE))
                with SimCluster(nodes) as cluster:
                    seconds[nodes].append(timed(cluster, job, Path(tmp, f"logs{nodes}-{round_}")))
    base = statistics.median(seconds[args.nodes[0]])
    results = {
        "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
                   f"Python {platform.python_version()}",
        "runs": [{"nodes": n, "workers": n * WORKERS_A_NODE, "seconds": s,
                  "median": statistics.median(s), "ratio": statistics.median(s) / base}
                 for n, s in seconds.items()],
    }
    for run in results["runs"]:
        print(f"{run['nodes']} node(s), {run['workers']} workers: median {run['median']:.2f} s "
              f"({', '.join(f'{x:.2f}' for x in run['seconds'])}), {run['ratio']:.2f}x one node")
    if args.out:
        args.out.write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
