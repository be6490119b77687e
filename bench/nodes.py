"""Start -> every worker registered -> script done -> exit on 1, 2 and 3 simulated
nodes (tests/simcluster.py: network namespaces on a private bridge, MPICH's
mpiexec through an ssh stand-in), 2 CPU workers a node, TLS on; beside each,
the same workers on one simulated node.

    python bench/nodes.py [--nodes 1 2 3] [--repeat 3] [--out bench/results/nodes.json]

Needs root. The layouts are interleaved in each round; prints the median of
each and the ratio of N nodes to one node with as many workers. The simulated
nodes share this machine's cores, so that ratio is what spanning nodes adds
(address choice, the reach check, TCP between ranks), not what real nodes give.
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


def timed(cluster: SimCluster, workers: int, job: Path, logs: Path) -> float:
    per_node = workers // len(cluster.nodes)
    ranks = [per_node + 2] + [per_node] * (len(cluster.nodes) - 1)
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
    layouts = sorted({(n, n * WORKERS_A_NODE) for n in args.nodes}
                     | {(1, n * WORKERS_A_NODE) for n in args.nodes})
    seconds: dict[tuple[int, int], list[float]] = {layout: [] for layout in layouts}
    with tempfile.TemporaryDirectory() as tmp:
        for round_ in range(args.repeat):
            for nodes, workers in layouts:
                job = Path(tmp, f"job{workers}.py")
                job.write_text(JOB.format(workers=workers))
                logs = Path(tmp, f"logs{nodes}-{workers}-{round_}")
                with SimCluster(nodes) as cluster:
                    seconds[nodes, workers].append(timed(cluster, workers, job, logs))
    median = {layout: statistics.median(s) for layout, s in seconds.items()}
    results = {
        "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
                   f"Python {platform.python_version()}",
        "runs": [{"nodes": n, "workers": w, "seconds": seconds[n, w], "median": median[n, w],
                  "vs_one_node": median[n, w] / median[1, w]} for n, w in layouts],
    }
    for run in results["runs"]:
        print(f"{run['nodes']} node(s), {run['workers']} workers: median {run['median']:.2f} s "
              f"({', '.join(f'{x:.2f}' for x in run['seconds'])}); "
              f"{run['vs_one_node']:.2f}x one node with as many workers")
    if args.out:
        args.out.write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
