"""On each GPU worker: its device, a CuPy computation, and a CuPy dask.array."""
import json
import os

import dask
import dask.array as da
from distributed import get_client


def on_worker():
    import cupy

    total = int(cupy.arange(10**6, dtype=cupy.int64).sum())
    props = cupy.cuda.runtime.getDeviceProperties(cupy.cuda.runtime.getDevice())
    return {
        "pid": os.getpid(),
        "visible": os.environ.get("CUDA_VISIBLE_DEVICES"),
        "count": cupy.cuda.runtime.getDeviceCount(),
        "pci_bus": props["pciBusID"],
        "name": props["name"].decode(),
        "total": total,
    }


client = get_client()
workers = client.run(on_worker)
with dask.config.set({"array.backend": "cupy"}):
    x = 10 + da.random.default_rng(42).standard_normal((4000, 4000), chunks=1000)
# Computed on the workers: CuPy results sent here would make a context here too.
chunk_type = client.submit(lambda b: type(b).__module__, client.compute(x.blocks[0, 0])).result()
total = client.submit(float, client.compute((x + 1)[::2, ::2].sum())).result()


def gpu_pids():
    import pynvml

    pynvml.nvmlInit()
    handles = [pynvml.nvmlDeviceGetHandleByIndex(i) for i in range(pynvml.nvmlDeviceGetCount())]
    return sorted({p.pid for h in handles for p in pynvml.nvmlDeviceGetComputeRunningProcesses(h)})


print("GPU " + json.dumps(
    {"workers": workers, "chunk_module": chunk_type, "sum": total, "gpu_pids": gpu_pids(),
     "driver_pid": os.getpid(), "scheduler_pid": client.run_on_scheduler(os.getpid)}
))
