"""Imported by the fork server of worker_processes.py alone, before it forks
any worker process: what each worker process needs, imported once.

The server also stops hearing SIGTERM, which mpirun, and Ctrl-C through it,
sends to each rank's whole process group: were the server to die first, the
nanny would read its worker process, still running, as dead (exit status 255),
and neither close nor restart it.  The server ends when its rank does.
"""
import signal

from start_daskmpi import servers  # noqa: F401  distributed and the worker's class

signal.signal(signal.SIGTERM, signal.SIG_IGN)
