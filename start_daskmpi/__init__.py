"""start_daskmpi: a Dask cluster under MPI, one worker per GPU, and your script
or JupyterLab on it.

    mpirun -np N python start_daskmpi.py [options] script.py [script args ...]

The modules, from the command line down (README's "How the code is laid out"):

- cli: ``main``; options: the command line; plan and launchers: --plan and the
  launch lines of each MPI launcher.
- layout: ranks x nodes x GPUs -> roles (pure); node and gpus: what a node
  offers and how a process is pinned to a GPU; sites, places, network: known
  machines, ports and folders, addresses.
- mpi: the only module that imports mpi4py; roles: one function per role
  under mpirun; liveness: nodes that cannot reach the scheduler, workers lost
  with their node, a dead driver; local: the same cluster without mpirun;
  loop_thread: an event loop in a thread of its own.
- servers: the scheduler and workers; security: the job's TLS credentials;
  checks: what each role checks before it starts; logs: per-rank logs.
- driver: the client side; script: the user's script as python runs it;
  jupyterlab_mode: JupyterLab until 'stop'; dashboard_relay: the dashboard
  inside JupyterLab when JupyterLab runs on another node than the scheduler;
  lab_proxy_guard: JupyterLab's proxy limited to the dashboard;
  banners: what the user is told to type.
- joining: --join, workers added to a running cluster by a second mpirun.
- dask_mpi_api: dask-mpi's initialize(), send_close_signal() and execute(),
  importable from the package itself; client_files: the files a job leaves
  for the user's other clients, and connect(), which reads them.

Importing the package has no side effects: MPI is initialised in ``main`` only,
and the pure modules import neither distributed nor mpi4py.
"""

__version__ = "0.2.0"

API = {"initialize": "dask_mpi_api", "send_close_signal": "dask_mpi_api",
       "execute": "dask_mpi_api", "connect": "client_files"}
__all__ = list(API)


def __getattr__(name: str) -> object:
    # Imported when first asked for: a plan or a nanny's process imports the
    # package without needing Dask.
    if name in API:
        import importlib

        return getattr(importlib.import_module(f".{API[name]}", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
