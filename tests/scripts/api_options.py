"""initialize(exit=False) with dask-mpi's keywords and the launcher's own; the
client's rank reports what the workers got, then send_close_signal(); every
rank then goes on with MPI, as a script that called initialize(exit=False) may."""
import json
import sys

import dashboard_http
from distributed import Client, Worker
from mpi4py import MPI

from start_daskmpi import initialize, send_close_signal


class MarkedWorker(Worker):
    """A worker class of the user's, as dask-mpi's worker_class takes it."""

    marked = True


is_client = initialize(
    nthreads=2,
    memory_limit="1GB",
    worker_class=MarkedWorker,
    worker_options={"resources": {"FOO": 1}},
    exit=False,
    dashboard=False,
    interface="lo",
    gpus_per_node=0,  # the launcher's own option, as a keyword
    startup_timeout=60,
)
if is_client:
    with Client() as client:
        info = client.scheduler_info()["workers"].values()
        marked = client.run(lambda dask_worker: getattr(dask_worker, "marked", False))
        status, _ = dashboard_http.page(client, "status")  # the HTTP server, still
        print("REPORT " + json.dumps({
            "names": sorted(w["name"] for w in info),
            "nthreads": sorted(w["nthreads"] for w in info),
            "memory": sorted(w["memory_limit"] for w in info),
            "resources": sorted(str(w["resources"]) for w in info),
            "marked": sorted(marked.values()),
            "tls": client.scheduler.address.startswith("tls://"),
            "dashboard_status": status,
        }), flush=True)
    send_close_signal()
# Back from the cluster, every rank still has MPI.
total = MPI.COMM_WORLD.allreduce(1)
# One write, newline included: the ranks' lines, forwarded by mpirun, stay whole.
sys.stdout.write(f"RANK {MPI.COMM_WORLD.rank} is_client={is_client} total={total}\n")
sys.stdout.flush()
