"""A rank's life, one for every mode: agree on the cluster (cluster.py),
import what the role starts with, serve the role (roles.py; the driver's in
driver_rank.py), watch who is still there (liveness.py), end the job together
(ending.py)."""
