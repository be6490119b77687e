#!/bin/bash
# As a batch system's per-task GPUs or ALCF's affinity wrapper do: each rank its
# own GPU mask, here counted down from 9 by the rank's place on its node.
export CUDA_VISIBLE_DEVICES=$((9 - ${MPI_LOCALRANKID:-${OMPI_COMM_WORLD_LOCAL_RANK:-0}}))
exec "$@"
