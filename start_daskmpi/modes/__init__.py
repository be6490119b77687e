"""The ways in, each a thin use of the one lifecycle: the command under
mpirun (launcher.py), --join (join.py), dask-mpi's Python API (api.py,
api_ranks.py), and the local cluster without mpirun (local.py)."""
