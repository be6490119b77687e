"""A worker preload (--preload): it marks the worker it ran in."""


def dask_setup(worker):
    worker.preloaded_by = "preload_mark.py"
