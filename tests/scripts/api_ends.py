"""A script of dask-mpi's kind: initialize(), a task, then it ends as argv[1]
says: ok, exit3 (sys.exit(3)), raise, hard (os._exit(4)) or sigterm."""
import os
import signal
import sys
import time

from distributed import Client

from start_daskmpi import initialize

initialize(interface="lo", gpus_per_node=0)

with Client() as client:
    assert client.submit(abs, -1).result() == 1
how = sys.argv[1]
if how == "exit3":
    sys.exit(3)
if how == "raise":
    raise ValueError("the script's own error")
if how == "hard":
    os._exit(4)
if how == "sigterm":
    try:
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(30)
    finally:
        print("FINALLY ran")
