#!/bin/bash
# A Dask cluster on this job's GPU nodes, under MPI: start_daskmpi.py runs SCRIPT on
# it (or, with no script, JupyterLab until 'stop'). One script for three schedulers:
#
#   Cobalt (ThetaGPU):  qsub -n 2 -q full-node -A MyProject -t 00:30:00 daskmpi_job_gpu.sh my_script.py
#   PBS Pro (Polaris):  qsub -l select=2:system=polaris -l walltime=00:30:00 -l filesystems=home \
#                            -A MyProject -q debug -v DASKMPI_SCRIPT=my_script.py daskmpi_job_gpu.sh
#   Slurm (Perlmutter): sbatch -N 2 -C gpu -G 8 -t 00:30:00 -A MyProject daskmpi_job_gpu.sh my_script.py
#
# Settings, as variables of the job's environment (qsub -v, sbatch --export, or export):
#   DASKMPI_SCRIPT          the script and its arguments, where the scheduler passes none (PBS)
#   DASKMPI_ENV             a conda environment (name or path) or a venv folder to activate
#   DASKMPI_GPUS_PER_NODE   GPUs per node (default: found on the first node; 0: CPU workers)
#   DASKMPI_RANKS_PER_NODE  ranks a node of CPU workers (default 4: scheduler, driver, 2 workers)
#   DASKMPI_OPTIONS         options for start_daskmpi.py, e.g. "--rmm-pool-size 60GB"
#   DASKMPI_LAUNCHER        the launch command to use instead of the one chosen here
#
# It finds the job's nodes, takes ranks per node = GPUs + 2 (launchers give every node
# the same count, so 2 ranks stay idle on the nodes after the first), prints the plan,
# then launches. The defaults below are one node for 30 minutes; the command line wins.
#COBALT -n 1 -t 00:30:00 -q full-node
#PBS -l select=1
#PBS -l walltime=00:30:00
#PBS -W umask=077
#SBATCH --nodes=1
#SBATCH --time=00:30:00
set -euo pipefail

say() { echo "daskmpi_job_gpu.sh: $*"; }

activate() {  # the user's environment: a venv folder, or a conda environment
    local env=${DASKMPI_ENV:-}
    [[ -z $env ]] && return
    if [[ -f $env/bin/activate ]]; then
        # shellcheck disable=SC1091
        source "$env/bin/activate"
    else
        eval "$(conda shell.bash hook)"
        conda activate "$env"
    fi
}

scheduler_of_this_job() {
    if [[ -n ${COBALT_NODEFILE:-} ]]; then echo Cobalt
    elif [[ -n ${PBS_NODEFILE:-} ]]; then echo PBS
    elif [[ -n ${SLURM_JOB_NODELIST:-} ]]; then echo Slurm
    else echo none
    fi
}

job_nodes() {  # this job's nodes, one per line, first node first, each once
    case $scheduler in
        Cobalt) cat "$COBALT_NODEFILE" ;;
        PBS) cat "$PBS_NODEFILE" ;;
        Slurm)
            if command -v scontrol >/dev/null; then
                scontrol show hostnames "$SLURM_JOB_NODELIST"
            else
                tr ',' '\n' <<<"$SLURM_JOB_NODELIST"
            fi
            ;;
        *) hostname ;;
    esac | awk 'NF && !seen[$1]++ {print $1}'
}

# The job's output gets JupyterLab's token and the cluster's addresses: readable
# by the user only (batch systems write it with the submitter's umask, often 022).
output=$(readlink -f /proc/$$/fd/1 || true)
if [[ -f $output && -O $output ]]; then chmod go= "$output"; fi
cd "${PBS_O_WORKDIR:-${SLURM_SUBMIT_DIR:-$PWD}}"  # PBS starts jobs in $HOME
activate
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
export PYTHONPATH=$here${PYTHONPATH:+:$PYTHONPATH}  # start_daskmpi, where it is not installed
if (($# == 0)) && [[ -n ${DASKMPI_SCRIPT:-} ]]; then
    read -r -a script <<<"$DASKMPI_SCRIPT"
    set -- "${script[@]}"
fi
read -r -a options <<<"${DASKMPI_OPTIONS:-}"

scheduler=$(scheduler_of_this_job)
hosts=$(mktemp "${TMPDIR:-/tmp}/daskmpi_hosts.XXXXXX")
# The job's status as the driver says it, in the job's folder (shared: the driver
# may run on another node): the launcher's may hide it.
said=$(mktemp "$PWD/.daskmpi_status.XXXXXX")
trap 'rm -f "$hosts" "$said"' EXIT
job_nodes >"$hosts"
nodes=$(wc -l <"$hosts")
# By its full path: Open MPI's mpirun, called by its own full path, puts its folder
# first on the ranks' PATH, where another python3 may be.
python=$(command -v python3)
gpus=${DASKMPI_GPUS_PER_NODE:-$("$python" -c 'from start_daskmpi.plan.node import this_node; print(len(this_node(None).gpus))')}
if ((gpus > 0)); then
    per_node=$((gpus + 2))
else
    per_node=${DASKMPI_RANKS_PER_NODE:-4}
fi
total=$((nodes * per_node))

say "$scheduler job on $nodes node(s) ($(paste -sd' ' "$hosts")), $gpus GPU(s) a node"
# The script's arguments stay out of the job's output file, which others may read.
"$python" -m start_daskmpi --plan --nodes "$nodes" --gpus-per-node "$gpus" -np "$total" "${options[@]}" ${1:+"$1"}
if [[ -n ${DASKMPI_LAUNCHER:-} ]]; then
    launch=$DASKMPI_LAUNCHER
else  # the launch line of the MPI found here, as --plan builds them
    launch=$("$python" -m start_daskmpi --launch-command --nodes "$nodes" -np "$total" --hostfile "$hosts") || exit 2
fi
eval "launcher=($launch)"  # the words as the launcher line quotes them
command=("$python" -m start_daskmpi --gpus-per-node "$gpus" --status-file "$said" "${options[@]}" "$@")
say "running: ${launcher[*]} ${command[*]:0:${#command[@]}-$#} ${1:-}${2:+ ...}"
# The batch system's SIGTERM (walltime, qdel, scancel) is passed on to the
# launcher, which forwards it to the ranks, and the job ends in order: the
# script's finally runs, JupyterLab stops.  But Open MPI 5 answers SIGTERM by
# killing the ranks at once: it gets SIGUSR1, which it forwards, and which its
# ranks take as SIGTERM (start_daskmpi/mpi/launcher_signals.py).  (Open MPI 4 forwards
# no SIGUSR1, measured on 4.1.6, but gives the ranks the launch line's
# odls_base_sigkill_timeout after a SIGTERM.)  Where the batch system signals
# the launcher itself too, see README ("Signals and your finally").
gentle=TERM
if "${launcher[0]}" --version 2>&1 | grep -qE "\(Open MPI\) ([5-9]|[1-9][0-9])\."; then gentle=USR1; fi
end_in_order() {
    say "$1: ending the job in order (SIG$gentle to the launcher, SIGTERM to each rank)"
    kill "-$gentle" "$running" 2>/dev/null || true
}
trap 'end_in_order SIGTERM' TERM
trap 'end_in_order SIGINT' INT
trap 'end_in_order SIGUSR1' USR1  # qsig -s USR1, scancel -s USR1 --batch: the same, asked for
"${launcher[@]}" "${command[@]}" <&0 &
running=$!
until wait "$running"; status=$?; ! kill -0 "$running" 2>/dev/null; do :; done
if [[ -s $said ]]; then
    status=$(<"$said")
elif ((status == 0)); then  # Open MPI's mpirun, having lost a node, exits 0
    say "error: the job ended before its driver could tell how (a node lost?): see the MPI launcher's lines above"
    status=1
fi
exit "$status"
