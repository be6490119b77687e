"""Rank 0 is sent the driver's word (rank 1's) and never reads it, as a rank
that stopped waiting after a signal's grace; then both leave through
exit_together, whose MPI_Finalize failed on such a message under MPICH."""
import mpi4py

mpi4py.rc.finalize = False  # as the launcher runs: exit_together finalises
from mpi4py import MPI  # noqa: E402

from start_daskmpi.mpi.ending import exit_together  # noqa: E402
from start_daskmpi.mpi.world import TAG_END  # noqa: E402

world = MPI.COMM_WORLD
rank = world.rank
if rank == 1:
    world.send(143, dest=0, tag=TAG_END)
finalised = exit_together(world, 143)
print(f"rank {rank} finalised: {finalised}", flush=True)
