#!/usr/bin/env bash
# Trains dcsfn_jax on NVIDIA GPUs: one host with N GPUs, several hosts joined
# by an explicit coordinator, or a SLURM cluster. Run it from the repository
# root; `--dry-run` prints the commands instead of running them. See
# launch/README.md.
set -euo pipefail

REPO_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
readonly REPO_ROOT

usage() {
  cat <<'EOF'
Usage: launch/gpu.sh [--dry-run] COMMAND [FLAGS] [-- TRAINER_FLAGS...]

Commands
  install   install this checkout with its cuda12 (or --cuda 13) extra, i.e.
            jax[cuda12] at the version pyproject.toml pins, into --python's
            environment (a virtualenv is recommended)
  train     run the trainer on this host, one process over all its GPUs (or
            --gpus N); with --coordinator_address, --num_processes and
            --process_id it is one process of a multi-node run (start it on
            every node); run under `srun` with one task per GPU, it takes
            SLURM's variables
  slurm     submit a SLURM batch job over --nodes nodes with one process per
            GPU (sbatch, then srun)

Flags (defaults in brackets)
  --python PATH               Python interpreter [python3]
  --cuda 12|13                CUDA major version of the jax wheels [12]
  --gpus N                    use GPUs 0..N-1 of this host [all]
  --config PATH[:PRESET]      trainer config [configs/rain100h.py]
  --workdir DIR               checkpoints and logs; shared by all nodes (train, slurm)
  --data_dir DIR              tfds data dir [the config's data_dir]
  --coordinator_address H:P   host and port of process 0, reachable by every node
  --num_processes P           number of processes (nodes) in the run
  --process_id I              this node's index, 0..P-1
  --nodes N                   SLURM nodes [1]
  --gpus_per_node G           GPUs per SLURM node [8]
  --partition NAME            SLURM partition [the cluster's default]
  --time LIMIT                SLURM time limit, e.g. 24:00:00 [the partition's]
  --job_name NAME             SLURM job name [dcsfn]
  --dry-run                   print the commands, run nothing
  -h, --help                  this help

Everything after `--` is passed to the trainer, e.g. -- --config.batch_size=64

Examples
  launch/gpu.sh install --python .venv/bin/python
  launch/gpu.sh train --gpus 4 --workdir runs/rain100h --data_dir ~/tfds
  # two nodes, on node 0 and node 1 (process_id 1):
  launch/gpu.sh train --coordinator_address node0:12355 --num_processes 2 \
    --process_id 0 --workdir /shared/runs/rain100h --data_dir /shared/tfds
  launch/gpu.sh slurm --nodes 2 --gpus_per_node 8 --partition gpu \
    --workdir /shared/runs/rain100h --data_dir /shared/tfds
EOF
}

readonly SCRIPT_NAME=gpu.sh
# shellcheck source=SCRIPTDIR/common.sh
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

require_positive_int() {
  local flag="$1" value="$2"
  [[ "${value}" =~ ^[1-9][0-9]*$ ]] \
    || die "${flag} must be a positive integer, got '${value}'."
}

# The trainer's command line, shared by `train` and `slurm`.
trainer_words() {
  [[ -n "${WORKDIR}" ]] || die "${COMMAND} needs --workdir (where checkpoints and logs go)."
  TRAINER=("${PYTHON}" -m dcsfn_jax.train "--config=${CONFIG}" "--workdir=${WORKDIR}")
  if [[ -n "${DATA_DIR}" ]]; then
    TRAINER+=("--config.data_dir=${DATA_DIR}")
  fi
  TRAINER+=("${TRAINER_ARGS[@]}")
}

cmd_install() {
  [[ "${CUDA}" == 12 || "${CUDA}" == 13 ]] \
    || die "--cuda must be 12 or 13, got '${CUDA}'."
  # The extra pins jax[cudaN] to the project's jax version (pyproject.toml).
  run "${PYTHON}" -m pip install -e "${REPO_ROOT}[cuda${CUDA}]"
  run "${PYTHON}" -c 'import jax; print(jax.devices())'
}

cmd_train() {
  trainer_words
  # dcsfn_jax.parallel.initialize_distributed reads these three variables.
  local env_vars=()
  local given=0
  [[ -z "${COORDINATOR}" ]] || given=$((given + 1))
  [[ -z "${NUM_PROCESSES}" ]] || given=$((given + 1))
  [[ -z "${PROCESS_ID}" ]] || given=$((given + 1))
  if (( given == 3 )); then
    [[ "${COORDINATOR}" == *:[0-9]* ]] \
      || die "--coordinator_address must be HOST:PORT, got '${COORDINATOR}'."
    require_positive_int --num_processes "${NUM_PROCESSES}"
    if ! [[ "${PROCESS_ID}" =~ ^[0-9]+$ ]] || (( PROCESS_ID >= NUM_PROCESSES )); then
      die "--process_id must be in 0..$((NUM_PROCESSES - 1)), got '${PROCESS_ID}'."
    fi
    env_vars+=("JAX_COORDINATOR_ADDRESS=${COORDINATOR}"
               "JAX_NUM_PROCESSES=${NUM_PROCESSES}"
               "JAX_PROCESS_ID=${PROCESS_ID}")
  elif (( given )); then
    die "a multi-node run needs all of --coordinator_address, --num_processes and --process_id."
  fi
  if [[ -n "${GPUS}" ]]; then
    require_positive_int --gpus "${GPUS}"
    env_vars+=("CUDA_VISIBLE_DEVICES=$(seq -s, 0 $((GPUS - 1)))")
  fi
  if (( ${#env_vars[@]} )); then
    run env "${env_vars[@]}" "${TRAINER[@]}"
  else
    run "${TRAINER[@]}"
  fi
}

cmd_slurm() {
  require_positive_int --nodes "${NODES}"
  require_positive_int --gpus_per_node "${GPUS_PER_NODE}"
  trainer_words
  # One task per GPU: JAX's SLURM detection gives each process the GPU whose
  # index is its SLURM_LOCALID, and SLURM_NTASKS > 1 makes the trainer call
  # jax.distributed.initialize().
  local sbatch=(sbatch "--job-name=${JOB_NAME}" "--nodes=${NODES}"
                "--ntasks-per-node=${GPUS_PER_NODE}"
                "--gpus-per-node=${GPUS_PER_NODE}")
  if [[ -n "${PARTITION}" ]]; then
    sbatch+=("--partition=${PARTITION}")
  fi
  if [[ -n "${TIME_LIMIT}" ]]; then
    sbatch+=("--time=${TIME_LIMIT}")
  fi
  run "${sbatch[@]}" "--wrap=srun $(join_quoted "${TRAINER[@]}")"
}

PYTHON=python3
CUDA=12
GPUS=''
CONFIG=configs/rain100h.py
WORKDIR=''
DATA_DIR=''
COORDINATOR=''
NUM_PROCESSES=''
PROCESS_ID=''
NODES=1
GPUS_PER_NODE=8
PARTITION=''
TIME_LIMIT=''
JOB_NAME=dcsfn
TRAINER=()
declare -A VALUE_FLAGS=(
  [--python]=PYTHON [--cuda]=CUDA [--gpus]=GPUS [--config]=CONFIG
  [--workdir]=WORKDIR [--data_dir]=DATA_DIR
  [--coordinator_address]=COORDINATOR [--num_processes]=NUM_PROCESSES
  [--process_id]=PROCESS_ID [--nodes]=NODES [--gpus_per_node]=GPUS_PER_NODE
  [--partition]=PARTITION [--time]=TIME_LIMIT [--job_name]=JOB_NAME
)
declare -A SWITCH_FLAGS=()
parse_args "$@"
WORKDIR="${WORKDIR%/}"
DATA_DIR="${DATA_DIR%/}"

case "${COMMAND}" in
  install) cmd_install ;;
  train) cmd_train ;;
  slurm) cmd_slurm ;;
  *) die "unknown command '${COMMAND}'." ;;
esac
