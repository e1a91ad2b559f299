#!/usr/bin/env bash
# Trains dcsfn_jax on a Cloud TPU VM or pod slice: create the VM, install the
# project on every worker, upload the prepared tfds data, train on all workers,
# tail the log, tear the VM down. Run it from your workstation; `--dry-run`
# prints the gcloud commands instead of running them. See launch/README.md.
set -euo pipefail

# Paths on the workers, written for the remote shell to expand $HOME.
# shellcheck disable=SC2016
readonly REMOTE_CHECKOUT='$HOME/dcsfn_jax' REMOTE_VENV='$HOME/dcsfn-venv' \
  REMOTE_DATA_DIR='$HOME/tensorflow_datasets' REMOTE_LOG='$HOME/dcsfn_train.log' \
  REMOTE_UV='$HOME/.local/bin/uv'

usage() {
  cat <<'EOF'
Usage: launch/tpu_vm.sh [--dry-run] COMMAND [FLAGS] [-- TRAINER_FLAGS...]

Commands
  create       create the TPU VM (a single host such as v4-8, or a pod slice
               such as v4-32)
  install      on every worker: Python 3.11 venv, the project from --repo at
               --ref with its tpu extra (jax[tpu] at the version
               pyproject.toml pins), gcsfs and google-cloud-storage
  upload-data  copy a local tfds data dir (made once with
               `python -m dcsfn_jax.prepare`) to --data_dir on GCS
  train        on every worker (--worker=all): copy --data_dir from GCS to the
               worker's disk, then run `python -m dcsfn_jax.train`; the
               checkpoints, TensorBoard events and panels go to --workdir
  logs         follow the training log of worker 0 (after `train --detach`)
  teardown     delete the TPU VM
  up           create, install and train in one go

Flags (defaults in brackets)
  --name NAME                TPU VM name [dcsfn-tpu]
  --zone ZONE                [us-central2-b]
  --accelerator_type TYPE    [v4-8]; a pod slice (e.g. v4-32) has several workers
  --version VERSION          TPU software version [tpu-ubuntu2204-base]
  --project PROJECT          Google Cloud project [gcloud's configured project]
  --spot                     create a Spot VM (cheaper, can be preempted)
  --repo URL                 git URL of this project [$REPO_URL]
  --ref REF                  branch, tag or commit to install [main]
  --config PATH[:PRESET]     trainer config [configs/rain100h.py]
  --data_dir gs://...        tfds data dir on GCS (train, upload-data)
  --local_data_dir DIR       local tfds data dir to upload [~/tensorflow_datasets]
  --workdir gs://...         checkpoints and logs on GCS (train)
  --detach                   train in the background; follow with `logs`
  --dry-run                  print the commands, run nothing
  -h, --help                 this help

Everything after `--` is passed to the trainer, e.g. -- --config.batch_size=64

Example
  launch/tpu_vm.sh up --name rain100h --accelerator_type v4-8 \
    --repo https://github.com/you/dcsfn_jax.git \
    --data_dir gs://my-bucket/tfds --workdir gs://my-bucket/runs/rain100h
  launch/tpu_vm.sh teardown --name rain100h
EOF
}

readonly SCRIPT_NAME=tpu_vm.sh
# shellcheck source=SCRIPTDIR/common.sh
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

# The gcloud words shared by every `gcloud compute tpus tpu-vm` call.
tpu_vm() {
  local verb="$1"
  shift
  local words=(gcloud compute tpus tpu-vm "${verb}" "${NAME}" "--zone=${ZONE}")
  if [[ -n "${PROJECT}" ]]; then
    words+=("--project=${PROJECT}")
  fi
  run "${words[@]}" "$@"
}

require() {
  local flag="$1" value="$2" why="$3"
  [[ -n "${value}" ]] || die "${COMMAND} needs ${flag} (${why})."
}

require_gcs() {
  local flag="$1" value="$2"
  require "${flag}" "${value}" "a gs:// path every worker can reach"
  [[ "${value}" == gs://* ]] \
    || die "${flag} must be a gs:// path every worker can reach, got '${value}'."
}

cmd_create() {
  local extra=()
  if (( SPOT )); then
    extra+=(--spot)
  fi
  # The workers read and write gs:// with the VM's service account.
  tpu_vm create "--accelerator-type=${ACCELERATOR_TYPE}" \
    "--version=${VERSION}" \
    --scopes=https://www.googleapis.com/auth/cloud-platform "${extra[@]}"
}

cmd_install() {
  require --repo "${REPO}" "the git URL of this project; or set REPO_URL"
  # TPU VM images ship Python 3.10; uv provides the 3.11 the project pins.
  local steps=(
    "[ -d ${REMOTE_CHECKOUT}/.git ] || git clone --quiet $(quote "${REPO}") ${REMOTE_CHECKOUT}"
    "git -C ${REMOTE_CHECKOUT} fetch --quiet origin $(quote "${REF}")"
    "git -C ${REMOTE_CHECKOUT} checkout --quiet --detach FETCH_HEAD"
    "python3 -m pip install --quiet --user --upgrade uv"
    "{ [ -x ${REMOTE_VENV}/bin/python ] || ${REMOTE_UV} venv --python 3.11 ${REMOTE_VENV}; }"
    # Double quotes: the remote shell expands $HOME but does not glob [tpu].
    "${REMOTE_UV} pip install --python ${REMOTE_VENV}/bin/python -e \"${REMOTE_CHECKOUT}[tpu]\" gcsfs google-cloud-storage"
    "${REMOTE_VENV}/bin/python -c 'import dcsfn_jax, jax; print(\"jax\", jax.__version__)'"
  )
  tpu_vm ssh --worker=all "--command=$(join_steps "${steps[@]}")"
}

cmd_upload_data() {
  require_gcs --data_dir "${DATA_DIR}"
  [[ -d "${LOCAL_DATA_DIR}" ]] || (( DRY_RUN )) \
    || die "--local_data_dir '${LOCAL_DATA_DIR}' does not exist; prepare it first with: python -m dcsfn_jax.prepare --dataset synthetic_rain --data_dir ${LOCAL_DATA_DIR}"
  run gcloud storage rsync --recursive "${LOCAL_DATA_DIR}" "${DATA_DIR}"
}

cmd_train() {
  require_gcs --data_dir "${DATA_DIR}"
  require_gcs --workdir "${WORKDIR}"
  local trainer=(
    python -m dcsfn_jax.train "--config=${CONFIG}" "--workdir=${WORKDIR}"
  )
  # The remote paths stay unquoted so that the remote shell expands $HOME.
  local train_line
  train_line="${REMOTE_VENV}/bin/$(join_quoted "${trainer[@]}") --config.data_dir=${REMOTE_DATA_DIR}"
  if (( ${#TRAINER_ARGS[@]} )); then
    train_line+=" $(join_quoted "${TRAINER_ARGS[@]}")"
  fi
  if (( DETACH )); then
    train_line="{ nohup ${train_line} > ${REMOTE_LOG} 2>&1 < /dev/null & }"
  fi
  local steps=(
    "mkdir -p ${REMOTE_DATA_DIR}"
    "gcloud storage rsync --recursive $(quote "${DATA_DIR}") ${REMOTE_DATA_DIR}"
    "cd ${REMOTE_CHECKOUT}"
    "${train_line}"
  )
  tpu_vm ssh --worker=all "--command=$(join_steps "${steps[@]}")"
}

cmd_logs() {
  tpu_vm ssh --worker=0 "--command=tail -n +1 -f ${REMOTE_LOG}"
}

cmd_teardown() {
  tpu_vm delete --quiet
}

# Chains remote steps so that the first failure stops the rest.
join_steps() {
  local step line=''
  for step in "$@"; do
    line+="${line:+ && }${step}"
  done
  printf '%s' "${line}"
}

NAME=dcsfn-tpu
ZONE=us-central2-b
ACCELERATOR_TYPE=v4-8
VERSION=tpu-ubuntu2204-base
PROJECT=''
SPOT=0
REPO="${REPO_URL:-}"
REF=main
CONFIG=configs/rain100h.py
DATA_DIR=''
LOCAL_DATA_DIR="${HOME}/tensorflow_datasets"
WORKDIR=''
DETACH=0
declare -A VALUE_FLAGS=(
  [--name]=NAME [--zone]=ZONE [--accelerator_type]=ACCELERATOR_TYPE
  [--version]=VERSION [--project]=PROJECT [--repo]=REPO [--ref]=REF
  [--config]=CONFIG [--data_dir]=DATA_DIR [--local_data_dir]=LOCAL_DATA_DIR
  [--workdir]=WORKDIR
)
declare -A SWITCH_FLAGS=([--spot]=SPOT [--detach]=DETACH)
parse_args "$@"
DATA_DIR="${DATA_DIR%/}"
LOCAL_DATA_DIR="${LOCAL_DATA_DIR%/}"
WORKDIR="${WORKDIR%/}"

case "${COMMAND}" in
  create) cmd_create ;;
  install) cmd_install ;;
  upload-data) cmd_upload_data ;;
  train) cmd_train ;;
  logs) cmd_logs ;;
  teardown) cmd_teardown ;;
  up)
    # Check the train flags before paying for a VM.
    require_gcs --data_dir "${DATA_DIR}"
    require_gcs --workdir "${WORKDIR}"
    require --repo "${REPO}" "the git URL of this project; or set REPO_URL"
    cmd_create
    cmd_install
    cmd_train ;;
  *) die "unknown command '${COMMAND}'." ;;
esac
