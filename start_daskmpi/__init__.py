"""start_daskmpi: a Dask cluster under MPI, one worker per GPU, and your script
or JupyterLab on it.

    mpirun -np N python start_daskmpi.py [options] script.py [script args ...]

The subpackages, each one concern (docs/development.md says where a change goes):

- plan: what a job will be, worked out without Dask or MPI: its configuration
  (options), the rank layout, the node and its GPUs, the network, ports,
  known sites, launch lines, and what the user is told to type.
- mpi: MPI itself (the only place mpi4py is imported): the world, the few
  messages the ranks exchange, the bounded end, the launcher's signals.
- security: who can reach the cluster: the job's TLS credentials, private
  folders and files, what the job trusts.
- servers: the Dask servers: the scheduler, the workers, their processes,
  what they import first, their logs.
- driver: the client side: the script, JupyterLab, the dashboard relay,
  the walltime, the files left for the user's other clients.
- lifecycle: a rank's life, the same in every mode: agree on the cluster,
  serve its role, end the job together.
- modes: the ways in: the command under mpirun, --join, dask-mpi's Python
  API, and the local cluster without mpirun.

Importing the package has no side effects: MPI is initialised in ``main`` (or
the API's functions) only, and the plan imports neither distributed nor mpi4py.
"""

__version__ = "0.2.0"

API = {"initialize": "modes.api", "send_close_signal": "modes.api", "execute": "modes.api",
       "connect": "driver.client_files"}
__all__ = list(API)


def __getattr__(name: str) -> object:
    # Imported when first asked for: a plan or a nanny's process imports the
    # package without needing Dask.
    if name in API:
        import importlib

        return getattr(importlib.import_module(f".{API[name]}", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
