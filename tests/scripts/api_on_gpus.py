"""dask-mpi's API on a GPU node: one worker per GPU, each pinned to its own,
named after its rank.  initialize() (the default): every other rank idles;
``shared``: execute() with every role in rank 0's process and a worker on
every rank, the one beside the scheduler and the client pinned too."""
import json
import sys

from distributed import Client

from start_daskmpi import execute, initialize


def seen():
    import os

    import cupy

    device = cupy.cuda.Device(0)
    return {"visible": os.environ.get("CUDA_VISIBLE_DEVICES"),
            "count": cupy.cuda.runtime.getDeviceCount(),
            "pci_bus": device.pci_bus_id,
            "sum": float(cupy.arange(1000).sum())}


def report():
    with Client() as client:
        workers = client.scheduler_info()["workers"].values()
        print("API " + json.dumps({
            "names": sorted(w["name"] for w in workers),
            "resources": sorted(str(w["resources"]) for w in workers),
            "gpu_names": sorted(w.get("gpu", {}).get("name", "") for w in workers),  # NVML's
            "seen": sorted(client.run(seen).values(), key=lambda s: s["visible"]),
        }), flush=True)


if sys.argv[1:] == ["shared"]:
    execute(report, client_rank=0, scheduler_rank=0, exclusive_workers=False, interface="lo")
else:
    initialize(interface="lo")
    report()
