"""Print which of argv's modules each process of the cluster has imported, once
every process has them all or 60 s have passed; the script itself imports none."""
import json
import sys
import time

from distributed import get_client


def imported(names):
    return sorted(name for name in names if name in sys.modules)


names = sys.argv[1:]
client = get_client()
deadline = time.monotonic() + 60
while True:
    seen = {**client.run(imported, names), "scheduler": client.run_on_scheduler(imported, names)}
    if all(found == sorted(names) for found in seen.values()) or time.monotonic() > deadline:
        break
    time.sleep(0.2)
print("IMPORTED " + json.dumps(seen))
