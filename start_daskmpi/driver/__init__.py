"""The client side of the job, on the driver's rank: the client and the
wait for workers, the user's script or JupyterLab (its proxy guard, the
dashboard relay, the terminal's 'stop'), the walltime, and the files left for
the user's other clients."""
