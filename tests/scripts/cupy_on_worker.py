"""On each GPU worker: its device, a CuPy computation, and a CuPy dask.array,
made as cupy_test.py makes it."""
import json
import os
import sys
from pathlib import Path

from distributed import get_client

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # cupy_test, at the root
from cupy_test import blog_sum, normal_array  # noqa: E402


def on_worker():
    import cupy

    total = int(cupy.arange(10**6, dtype=cupy.int64).sum())
    props = cupy.cuda.runtime.getDeviceProperties(cupy.cuda.runtime.getDevice())
    return {
        "pid": os.getpid(),
        "visible": os.environ.get("CUDA_VISIBLE_DEVICES"),
        "count": cupy.cuda.runtime.getDeviceCount(),
        # Domain, bus, device and function: the bus alone is 0 on some machines' every GPU.
        "pci_bus": cupy.cuda.Device().pci_bus_id,
        "name": props["name"].decode(),
        "total": total,
    }


client = get_client()
workers = client.run(on_worker)
x = normal_array(4000, 1000, "cupy")
# Computed on the workers: CuPy results sent here would make a context here too.
chunk_type = client.submit(lambda b: type(b).__module__, client.compute(x.blocks[0, 0])).result()
total = float(client.compute(blog_sum(4000, 1000, "cupy")).result())


def gpu_pids():
    import pynvml

    pynvml.nvmlInit()
    handles = [pynvml.nvmlDeviceGetHandleByIndex(i) for i in range(pynvml.nvmlDeviceGetCount())]
    return sorted({p.pid for h in handles for p in pynvml.nvmlDeviceGetComputeRunningProcesses(h)})


print("GPU " + json.dumps(
    {"workers": workers, "chunk_module": chunk_type, "sum": total, "gpu_pids": gpu_pids(),
     "driver_pid": os.getpid(), "scheduler_pid": client.run_on_scheduler(os.getpid)}
))
