"""Print what each worker's preloads left on it, as JSON after PRELOADED."""
import json

from distributed import get_client


def mark(dask_worker):
    return getattr(dask_worker, "preloaded_by", None)


print("PRELOADED " + json.dumps(sorted(get_client().run(mark).values(), key=str)))
