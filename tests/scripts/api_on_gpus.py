"""dask-mpi's initialize() on a GPU node: one worker per GPU, each pinned to its
own, named after its rank; every other rank idles."""
import json

from distributed import Client

from start_daskmpi import initialize

initialize(interface="lo")


def seen():
    import os

    import cupy

    device = cupy.cuda.Device(0)
    return {"visible": os.environ.get("CUDA_VISIBLE_DEVICES"),
            "count": cupy.cuda.runtime.getDeviceCount(),
            "pci_bus": device.pci_bus_id,
            "sum": float(cupy.arange(1000).sum())}


with Client() as client:
    workers = client.scheduler_info()["workers"].values()
    print("API " + json.dumps({
        "names": sorted(w["name"] for w in workers),
        "resources": sorted(str(w["resources"]) for w in workers),
        "gpu_names": sorted(w.get("gpu", {}).get("name", "") for w in workers),  # from NVML
        "seen": sorted(client.run(seen).values(), key=lambda s: s["visible"]),
    }), flush=True)
