"""Lose the scheduler under a script: argv[1] 'kill' prints the scheduler's pid
for the test to kill it; 'close' has it close itself, as an idle timeout or an
internal error would, its process left running.  Meanwhile the script waits on
a task (argv[2] 'task') or on nothing of Dask's ('sleep')."""
import asyncio
import os
import sys
import time

from distributed import get_client


def close_soon(dask_scheduler):
    loop = asyncio.get_running_loop()
    loop.call_later(0.5, lambda: asyncio.ensure_future(dask_scheduler.close()))


client = get_client()
if sys.argv[1] == "kill":
    print("SCHEDULER", client.run_on_scheduler(os.getpid), flush=True)
else:
    client.run_on_scheduler(close_soon)
    print("CLOSING", flush=True)
if sys.argv[2] == "task":
    client.submit(time.sleep, 3600).result()
else:
    time.sleep(3600)
