"""Imported by the fork server of worker_processes.py alone, before it forks
any worker process: what each worker process needs, imported once, the
workers' --pre-import modules too (which its rank names in the server's
environment), on the server's one thread.

The server also stops hearing SIGTERM, which mpirun, and Ctrl-C through it,
sends to each rank's whole process group (and SIGHUP, which a closed
terminal sends its job's): were the server to die first, the
nanny would read its worker process, still running, as dead (exit status 255),
and neither close nor restart it.  The server ends when its rank does.
"""
import os
import signal

from start_daskmpi.servers.pre_imports import import_each
from start_daskmpi.servers.worker_processes import IMPORTS_VARIABLE

for signum in (signal.SIGTERM, signal.SIGHUP):
    signal.signal(signum, signal.SIG_IGN)
import_each([name for name in os.environ.get(IMPORTS_VARIABLE, "").split(",") if name])
