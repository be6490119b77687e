#!/usr/bin/env bash
# Issue 26's checks on the GPU machine (one NVIDIA GPU, 16 cores, Open MPI 4.1),
# as run there, in two parts that each fit one device call:
#
#   python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/site .whl/*.whl
#   export PYTHONPATH=/tmp/site
#   bash bench/gpu_reliability.sh first  OUT   # test_gpu.py; 34 ranks x 20 (and an older
#                                              # checkout in .old/, where there is one, x 6)
#   bash bench/gpu_reliability.sh second OUT   # 66 ranks x 20
#
# Each run's figures go to OUT/*.json (bench/exit_crashes.py), pytest's to OUT/gpu-tests.txt.
set -uo pipefail
part=${1:?first or second}
out=${2:?an output folder}
mkdir -p "$out"
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 PYTHONUNBUFFERED=1
nvidia-smi -L | head -n 1
mpirun --version | head -n 1
case "$part" in
first)
    if [ -d .old ]; then  # the commit before, side by side: does the crash show there?
        python3 bench/exit_crashes.py --ranks 34 --runs 6 --no-nanny-too --launcher .old \
            --deadline 80 --out "$out/old34.json" | tail -n 40
    fi
    python3 -m pytest -q -p no:cacheprovider tests/test_gpu.py 2>&1 | tee "$out/gpu-tests.txt" \
        | tail -n 15
    python3 bench/exit_crashes.py --ranks 34 --runs 20 --no-nanny-too --deadline 300 \
        --out "$out/new34.json" | tail -n 25
    ;;
second)
    python3 bench/exit_crashes.py --ranks 66 --runs 20 --no-nanny-too --deadline 480 \
        --out "$out/new66.json" | tail -n 25
    ;;
esac
