"""A rank's start, as cli.main makes it, then a process started as the nanny
starts its worker's: print what that process found, as JSON.

    python fork_server_probe.py FILE_THE_RANK_HOLDS none|thread
"""
import json
import os
import sys
import threading

import distributed
import psutil
from distributed.utils import get_mp_context
from worker_origin import origin


def probe(rank: int, held: str, answer) -> None:
    server = psutil.Process().parent()
    answer.put({
        "origin": origin(),
        "server": server.pid,
        "distributed_is_the_ranks": getattr(distributed, "marked_by", None) == rank,
        "server_holds_the_ranks_file": held in [f.path for f in server.open_files()],
    })


if __name__ == "__main__":
    from start_daskmpi.servers.worker_processes import start_fork_server

    held, threads = sys.argv[1], sys.argv[2]
    distributed.marked_by = os.getpid()  # as this rank left it: a fork would keep it
    file = open(held, "w")
    if threads == "thread":  # one (a site hook's, say) started before
        threading.Thread(target=threading.Event().wait, daemon=True).start()
    start_fork_server(fork_this_process=True)
    context = get_mp_context()
    answer = context.Queue()
    child = context.Process(target=probe, args=(os.getpid(), held, answer))
    child.start()
    print(json.dumps(answer.get(timeout=60)))
    child.join(timeout=60)
