"""Print what the script sees of its cluster as JSON, then exit with argv[1]."""
import json
import os
import sys

import cloudpickle
import psutil
import worker_origin
from distributed import Client, get_client
from worker_origin import origin

cloudpickle.register_pickle_by_value(worker_origin)  # the workers have not got this folder

PINS = ("CUDA_VISIBLE_DEVICES", "ROCR_VISIBLE_DEVICES", "HIP_VISIBLE_DEVICES", "ZE_AFFINITY_MASK")


def parent():
    """The worker process's parent: its pid, and what it is."""
    return psutil.Process().parent().pid, origin()


client = get_client()
workers = client.scheduler_info(n_workers=-1)["workers"].values()
plain = Client()  # no arguments: must reach the launcher's cluster, not a new one
print(
    "REPORT "
    + json.dumps(
        {
            "argv": sys.argv,
            "path0": sys.path[0],
            "name": __name__,
            "workers": sorted(w["name"] for w in workers),
            "resources": sorted(str(w["resources"]) for w in workers),
            "same_scheduler": plain.scheduler.address == client.scheduler.address,
            "devices": client.run(lambda: os.environ.get("CUDA_VISIBLE_DEVICES")),
            "pins": client.run(lambda: {v: os.environ[v] for v in PINS if v in os.environ}),
            "parents": sorted(client.run(parent).values()),
            "answer": client.submit(sum, [20, 22]).result(),
        }
    )
)
sys.exit(int(sys.argv[1]) if len(sys.argv) > 1 else 0)
