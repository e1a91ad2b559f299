#!/usr/bin/env bash
# Runs a study (python -m dcsfn_jax.study) spread over accelerators: one run
# per GPU of this host, one share per SLURM array task, or one share per TPU
# VM. Every process works on one shared --workdir; the study's claims keep
# any two from training the same run. `--dry-run` prints the commands
# instead of running them. See launch/README.md.
set -euo pipefail

usage() {
  cat <<'EOF'
Usage: launch/study.sh [--dry-run] COMMAND --study FILE --workdir DIR [FLAGS] [-- STUDY_FLAGS...]

Commands
  gpus     on this host: one study process per GPU (CUDA_VISIBLE_DEVICES=i,
           --task_index=i --num_tasks=N), each training one run at a time;
           waits for all and writes the report
  slurm    submit a SLURM job array of --tasks tasks, one GPU each; each task
           runs the share SLURM_ARRAY_TASK_ID of SLURM_ARRAY_TASK_COUNT
           (--tasks = variants x seeds gives one run per task)
  tpu-vm   on the single-host TPU VM --name: copy --data_dir from GCS to the
           VM's disk, then run share --task_index of --num_tasks there
           (start one per VM; the workdir is a gs:// folder all VMs share)
  report   write the report of what has finished (--report_only)

Flags (defaults in brackets)
  --study FILE              study config, e.g. configs/studies/table5.py
  --workdir DIR             the study's folder, shared by every process
  --data_dir DIR            tfds data dir (--config.data_dir of every run)
  --python PATH             Python interpreter [python3]
  --gpus N                  gpus: GPUs of this host to use [all that nvidia-smi lists]
  --tasks N                 slurm: array tasks
  --partition NAME          slurm: partition [the cluster's default]
  --time LIMIT              slurm: time limit per task, e.g. 48:00:00
  --job_name NAME           slurm: job name [dcsfn-study]
  --name NAME               tpu-vm: TPU VM name
  --zone ZONE               tpu-vm: zone [us-central2-b]
  --task_index I            tpu-vm: this VM's share [0]
  --num_tasks N             tpu-vm: number of VMs sharing the study [1]
  --dry-run                 print the commands, run nothing
  -h, --help                this help

Everything after `--` goes to every study process, e.g.
  -- --config.total_steps=2000

Examples
  launch/study.sh gpus --study configs/studies/table5.py --workdir runs/table5 --data_dir ~/tfds
  launch/study.sh slurm --study configs/studies/table5.py --tasks 12 --partition gpu \
    --time 48:00:00 --workdir /shared/runs/table5 --data_dir /shared/tfds
  launch/study.sh tpu-vm --name vm0 --task_index 0 --num_tasks 2 \
    --study configs/studies/table5.py --workdir gs://bucket/table5 --data_dir gs://bucket/tfds
EOF
}

readonly SCRIPT_NAME=study.sh
# shellcheck source=SCRIPTDIR/common.sh
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

require() {
  local flag="$1" value="$2"
  [[ -n "${value}" ]] || die "${COMMAND} needs ${flag}."
}

require_count() {
  local flag="$1" value="$2"
  [[ "${value}" =~ ^[1-9][0-9]*$ ]] \
    || die "${flag} must be a positive integer, got '${value}'."
}

# The study command line shared by every command, in STUDY.
study_words() {
  require --study "${STUDY}"
  require --workdir "${WORKDIR}"
  STUDY_CMD=("${PYTHON}" -m dcsfn_jax.study "--study=${STUDY}" "--workdir=${WORKDIR}")
  if [[ -n "${DATA_DIR}" ]]; then
    STUDY_CMD+=("--config.data_dir=${DATA_DIR}")
  fi
  STUDY_CMD+=("${TRAINER_ARGS[@]}")
}

cmd_gpus() {
  study_words
  if [[ -z "${GPUS}" ]]; then
    if (( DRY_RUN )); then
      GPUS=1
    else
      GPUS="$(nvidia-smi --list-gpus | wc -l)"
    fi
  fi
  require_count --gpus "${GPUS}"
  local index pids=()
  for (( index = 0; index < GPUS; index++ )); do
    if (( DRY_RUN )); then
      run env "CUDA_VISIBLE_DEVICES=${index}" "${STUDY_CMD[@]}" \
        "--task_index=${index}" "--num_tasks=${GPUS}"
    else
      mkdir -p "${WORKDIR}/logs"
      env "CUDA_VISIBLE_DEVICES=${index}" "${STUDY_CMD[@]}" \
        "--task_index=${index}" "--num_tasks=${GPUS}" \
        > "${WORKDIR}/logs/task_${index}.out" 2>&1 &
      pids+=("$!")
    fi
  done
  local failed=0 pid
  for pid in "${pids[@]}"; do
    wait "${pid}" || failed=1
  done
  run "${STUDY_CMD[@]}" --report_only
  return "${failed}"
}

cmd_slurm() {
  study_words
  require_count --tasks "${TASKS}"
  # One GPU per array task; the study reads SLURM_ARRAY_TASK_ID and
  # SLURM_ARRAY_TASK_COUNT for its share. `srun` is not needed: each task
  # is one process, and the trainer runs single-process under it.
  local sbatch=(sbatch "--job-name=${JOB_NAME}" "--array=0-$((TASKS - 1))"
                --ntasks=1 --gpus-per-task=1
                "--output=${WORKDIR}/logs/slurm_%A_%a.out")
  if [[ -n "${PARTITION}" ]]; then
    sbatch+=("--partition=${PARTITION}")
  fi
  if [[ -n "${TIME_LIMIT}" ]]; then
    sbatch+=("--time=${TIME_LIMIT}")
  fi
  if (( ! DRY_RUN )); then
    mkdir -p "${WORKDIR}/logs"
  fi
  run "${sbatch[@]}" "--wrap=$(join_quoted "${STUDY_CMD[@]}")"
}

cmd_tpu_vm() {
  require --name "${NAME}"
  require --data_dir "${DATA_DIR}"
  [[ "${WORKDIR}" == gs://* ]] \
    || die "--workdir must be a gs:// folder that every VM reaches, got '${WORKDIR}'."
  require_count --num_tasks "${NUM_TASKS}"
  if ! [[ "${TASK_INDEX}" =~ ^[0-9]+$ ]] || (( TASK_INDEX >= NUM_TASKS )); then
    die "--task_index must be in 0..$((NUM_TASKS - 1)), got '${TASK_INDEX}'."
  fi
  # The project is installed as launch/tpu_vm.sh install does.
  # shellcheck disable=SC2016  # $HOME is the VM's, expanded there
  local remote_data='$HOME/tensorflow_datasets'
  local study
  study="\$HOME/dcsfn-venv/bin/python -m dcsfn_jax.study $(join_quoted \
    "--study=${STUDY}" "--workdir=${WORKDIR}" \
    "--task_index=${TASK_INDEX}" "--num_tasks=${NUM_TASKS}" \
    "${TRAINER_ARGS[@]}") --config.data_dir=${remote_data}"
  local data_source steps
  data_source="$(quote "${DATA_DIR}")"
  steps="mkdir -p ${remote_data} && gcloud storage rsync --recursive ${data_source} ${remote_data} && cd \$HOME/dcsfn_jax && ${study}"
  run gcloud compute tpus tpu-vm ssh "${NAME}" "--zone=${ZONE}" --worker=0 \
    "--command=${steps}"
}

cmd_report() {
  study_words
  run "${STUDY_CMD[@]}" --report_only
}

PYTHON=python3
STUDY=''
WORKDIR=''
DATA_DIR=''
GPUS=''
TASKS=''
PARTITION=''
TIME_LIMIT=''
JOB_NAME=dcsfn-study
NAME=''
ZONE=us-central2-b
TASK_INDEX=0
NUM_TASKS=1
STUDY_CMD=()
declare -A VALUE_FLAGS=(
  [--python]=PYTHON [--study]=STUDY [--workdir]=WORKDIR
  [--data_dir]=DATA_DIR [--gpus]=GPUS [--tasks]=TASKS
  [--partition]=PARTITION [--time]=TIME_LIMIT [--job_name]=JOB_NAME
  [--name]=NAME [--zone]=ZONE [--task_index]=TASK_INDEX
  [--num_tasks]=NUM_TASKS
)
declare -A SWITCH_FLAGS=()
parse_args "$@"
WORKDIR="${WORKDIR%/}"

case "${COMMAND}" in
  gpus) cmd_gpus ;;
  slurm) cmd_slurm ;;
  tpu-vm) cmd_tpu_vm ;;
  report) cmd_report ;;
  *) die "unknown command '${COMMAND}'." ;;
esac
