"""GPU vs CPU dask.array on the launcher's cluster.

The example of the Dask blog post "GPU Dask Arrays, first steps": the sum of
``(x + 1)[::2, ::2]`` for a normal random array ``x`` (mean 10, sd 1), once with
CuPy chunks on the GPU workers and once with NumPy chunks.

    mpirun -np 10 python start_daskmpi.py cupy_test.py --size 20000 --chunks 5000
"""
from __future__ import annotations

import argparse
import importlib.util
import math
import sys
import time

import dask
import dask.array as da
from distributed import get_client

BLOG = "https://blog.dask.org/2019/01/03/dask-array-gpus-first-steps"
MEAN, SD = 10.0, 1.0


def expected_sum(size: int) -> tuple[float, float]:
    """Mean and standard deviation of the sum over ``(x + 1)[::2, ::2]``."""
    count = math.ceil(size / 2) ** 2
    return count * (MEAN + 1), math.sqrt(count) * SD


def blog_sum(size: int, chunks: int, backend: str) -> da.Array:
    """The lazy sum of ``(x + 1)[::2, ::2]``, with chunks of ``backend`` ("cupy" or "numpy")."""
    with dask.config.set({"array.backend": backend}):
        # CuPy's Generator has standard_normal but no normal.
        x = MEAN + SD * da.random.default_rng().standard_normal((size, size), chunks=chunks)
    return (x + 1)[::2, ::2].sum()


def timed_sum(size: int, chunks: int, backend: str) -> tuple[float, float]:
    start = time.perf_counter()
    total = float(blog_sum(size, chunks, backend).compute())
    return total, time.perf_counter() - start


def gpu_unavailable(client) -> str | None:
    """Why the GPU part cannot run here, or None when it can."""
    workers = client.scheduler_info(n_workers=-1)["workers"].values()
    gpus = sum(w["resources"].get("GPU", 0) for w in workers)
    if not gpus:
        return "the cluster has no GPU workers"
    if importlib.util.find_spec("cupy") is None:
        return "CuPy is not installed (pip install cupy-cuda12x)"
    return None


def check(total: float, size: int) -> bool:
    mean, sd = expected_sum(size)
    # Six standard deviations: a correct run fails this about once in 10^9.
    ok = abs(total - mean) <= 6 * sd
    print(f"    sum = {total:.6g}, expected {mean:.6g} +- {6 * sd:.3g}: {'ok' if ok else 'WRONG'}")
    return ok


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=10000, help="side of the square array")
    parser.add_argument("--chunks", type=int, default=2500, help="side of a square chunk")
    args = parser.parse_args(argv)
    client = get_client()
    print(f"Operation on dask.array (from {BLOG}):")
    ok = True
    reason = gpu_unavailable(client)
    print("with gpus")
    if reason:
        print(f"    skipped: {reason}")
    else:
        total, seconds = timed_sum(args.size, args.chunks, "cupy")
        print(f"elapsed time: {seconds:.3f} s")
        ok &= check(total, args.size)
    print("without gpus")
    total, seconds = timed_sum(args.size, args.chunks, "numpy")
    print(f"elapsed time: {seconds:.3f} s")
    ok &= check(total, args.size)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
