"""SIGKILL one worker process mid-computation, as the OOM killer would; print
what the computation gave and what came back in the worker's place."""
import json
import os
import signal
import sys
import time

import cloudpickle
import worker_origin
from distributed import get_client
from worker_origin import origin

cloudpickle.register_pickle_by_value(worker_origin)  # the workers have not got this folder


def slow_square(x):
    time.sleep(0.2)
    return x * x


def process():
    return os.getpid(), os.environ.get("CUDA_VISIBLE_DEVICES"), origin()


def workers_by_name(client):
    info = client.scheduler_info(n_workers=-1)["workers"]
    return {w["name"]: address for address, w in info.items()}


client = get_client()
before = workers_by_name(client)
victim = sorted(before)[0]
pid, device, started_by = client.run(process, workers=[before[victim]])[before[victim]]
futures = client.map(slow_square, range(int(sys.argv[1])))
while sum(f.done() for f in futures) < 4:
    time.sleep(0.05)
os.kill(pid, signal.SIGKILL)
total = sum(client.gather(futures))
deadline = time.monotonic() + 60
while victim not in workers_by_name(client) and time.monotonic() < deadline:
    time.sleep(0.1)
after = workers_by_name(client)
new_pid, new_device, new_started_by = client.run(process, workers=[after[victim]])[after[victim]]
print("FAULT " + json.dumps({
    "total": total, "victim": victim, "restarted": new_pid != pid,
    "device_before": device, "device_after": new_device, "workers": sorted(after),
    "started_by": [started_by, new_started_by],
}))
