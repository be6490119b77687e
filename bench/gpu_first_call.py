"""What a GPU worker's first cupy_test call pays for, step by step.

    python bench/gpu_first_call.py [--chunk 20000] [--out bench/results/gpu_first_call.json]

In a fresh process on GPU 0, as a worker process starts, each step of what its
first task needs, timed apart (synchronised): the imports (CuPy, dask.array),
the CUDA context, CuPy's first kernels, cuRAND's first generator, and then one
chunk of cupy_test's operation twice, the first time and the steady state.
Run twice: with CuPy's kernel cache empty (a new node), and filled (the next
job on it).  What the steps cost is what a worker could pay at its start,
while the other ranks start, instead of in the user's first call.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

STEPS = """
import json, sys, time
sys.path.insert(0, {root!r})
seconds, start = {{}}, time.perf_counter()

def step(name):
    global start
    now = time.perf_counter()
    seconds[name] = round(now - start, 4)
    start = now

import cupy
step("import cupy")
import dask.array
step("import dask.array")
cupy.cuda.Device(0).use(); cupy.cuda.runtime.free(0); cupy.cuda.Device().synchronize()
step("CUDA context")
small = cupy.ones((1000, 1000)); cupy.cuda.Device().synchronize()
step("first allocation and fill")
small = (small * 2.0 + 1.0) + 1; cupy.cuda.Device().synchronize()
step("first elementwise kernels")
float(small[::2, ::2].sum())
step("first reduction")
rng = cupy.random.default_rng(1); cupy.cuda.Device().synchronize()
step("first cuRAND generator")
rng.standard_normal((1000, 1000)); cupy.cuda.Device().synchronize()
step("first draw")
for name in ("chunk, first time", "chunk, steady"):
    x = 10.0 + 1.0 * cupy.random.default_rng(2).standard_normal(({chunk}, {chunk}))
    float((x + 1)[::2, ::2].sum())
    del x
    step(name)
print(json.dumps(seconds))
"""


def one_process(chunk: int, cache: str) -> dict[str, float]:
    done = subprocess.run(
        [sys.executable, "-c", STEPS.format(root=str(ROOT), chunk=chunk)],
        capture_output=True, text=True, timeout=600,
        env={**os.environ, "CUPY_CACHE_DIR": cache},
    )
    if done.returncode:
        raise RuntimeError(done.stderr[-2000:])
    return json.loads(done.stdout.splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--chunk", type=int, default=20000)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as cache:
        results = {"chunk": args.chunk,
                   "empty kernel cache": one_process(args.chunk, cache),
                   "filled kernel cache": one_process(args.chunk, cache)}
    print(json.dumps(results, indent=2))
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
