"""On each GPU worker: what dask-cuda set up (memory resource, CuPy's allocator,
the worker's spilling store), and a CuPy computation through it."""
import json

from distributed import get_client


def on_worker(dask_worker):
    import cupy

    try:
        import rmm

        resource = type(rmm.mr.get_current_device_resource()).__name__
    except ImportError:
        resource = None
    allocator = cupy.cuda.get_allocator()
    return {
        "resource": resource,
        "allocator": getattr(allocator, "__name__", type(allocator).__name__),
        "store": type(dask_worker.data).__name__,
        "sum": float(cupy.ones(10**6).sum()),
    }


print("DASKCUDA " + json.dumps(get_client().run(on_worker)))
