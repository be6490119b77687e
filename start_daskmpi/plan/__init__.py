"""What a job will be, worked out before any server starts and without Dask
or MPI (pure: tests/test_package.py checks it): the options and the frozen
configuration they make, the rank layout, the node and its GPUs, the network
and ports, known sites, launch lines, and the lines that tell the user what
to type (the tunnels)."""
