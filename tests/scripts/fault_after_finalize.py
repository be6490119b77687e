"""A fault of ours once MPI is finalised (one inside MPI_Finalize, say):
faults_end_the_job logs it and ends the rank with 1, with no second error
from asking a finalised MPI."""
import logging
import sys

import mpi4py

mpi4py.rc.finalize = False
from mpi4py import MPI  # noqa: E402

from start_daskmpi.mpi.ending import faults_end_the_job  # noqa: E402

logging.basicConfig(stream=sys.stderr, format="%(message)s")
with faults_end_the_job(MPI.COMM_WORLD):
    MPI.Finalize()
    raise RuntimeError("broke at the end")
