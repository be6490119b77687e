"""Which process started this nanny's worker process (worker_processes.py)."""
import psutil


def origin() -> str:
    """"a fresh fork server": multiprocessing's own, a new interpreter;
    "a fork of its rank": a fork server forked from the nanny's rank, which
    shows the rank's command line; "its rank": the nanny spawned it itself."""
    parent = psutil.Process().parent()
    if "multiprocessing.forkserver" in " ".join(parent.cmdline()):
        return "a fresh fork server"
    grandparent = parent.parent()
    if grandparent is not None and parent.cmdline() == grandparent.cmdline():
        return "a fork of its rank"
    return "its rank"
