"""The Dask servers each rank runs: the scheduler and its dashboard, the
workers (pinned to their GPU, behind a nanny, their processes forked from a
fork server), what they import first, their logs."""
