#!/bin/bash
# The last rank's worker alone runs the preload $LAST_RANK_PRELOAD (Python code):
# one slow or broken worker among good ones.
rank=${PMI_RANK:-${OMPI_COMM_WORLD_RANK:-0}}
size=${PMI_SIZE:-${OMPI_COMM_WORLD_SIZE:-1}}
if [ "$rank" -eq $((size - 1)) ]; then
    export DASK_DISTRIBUTED__WORKER__PRELOAD="[\"$LAST_RANK_PRELOAD\"]"
fi
exec "$@"
