"""MPI itself, the only place mpi4py is imported: the world and the few
messages the ranks exchange (the start, the end), the bounded end of a rank,
and the signals a launcher sends."""
