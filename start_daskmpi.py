#!/usr/bin/env python
"""Start a Dask cluster under MPI, one worker per GPU, and run a script on it.

    mpirun -np N python start_daskmpi.py [options] script.py [script args ...]

The launcher is the ``start_daskmpi`` package beside this file; this entry
only runs its ``main`` (as do ``python -m start_daskmpi`` and the
``start-daskmpi`` command), so that a plain checkout works without pip install.
"""
import os
import sys

if __name__ == "__main__":  # a nanny's worker process re-imports this file
    # This file's folder comes first on sys.path, and there a package wins over
    # a module of the same name: the import below finds the package.
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    from start_daskmpi.cli import main

    sys.exit(main())
