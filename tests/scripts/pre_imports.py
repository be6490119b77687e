"""Print which of argv's modules each process of the cluster has imported, as
soon as the script starts: they are imported before the servers start, not
after; the script itself imports none."""
import json
import sys

from distributed import get_client


def imported(names):
    return sorted(name for name in names if name in sys.modules)


names = sys.argv[1:]
client = get_client()
seen = {**client.run(imported, names), "scheduler": client.run_on_scheduler(imported, names)}
print("IMPORTED " + json.dumps(seen))
