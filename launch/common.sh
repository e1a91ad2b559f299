#!/usr/bin/env bash
# Helpers shared by launch/gpu.sh and launch/tpu_vm.sh; sourced, not run.
# The sourcing script sets SCRIPT_NAME, defines usage() and declares its flags
# for parse_args.

die() {
  echo "${SCRIPT_NAME}: $*" >&2
  echo "Run 'launch/${SCRIPT_NAME} --help' for the commands and flags." >&2
  exit 2
}

# Quotes one word for a POSIX shell, leaving plain words as they are, so that
# the dry-run output can be pasted into a shell and a remote command is
# received by the remote shell exactly as written here.
quote() {
  case "$1" in
    '') printf "''" ;;
    *[!A-Za-z0-9_@%+=:,./-]*) printf "'%s'" "${1//\'/\'\\\'\'}" ;;
    *) printf '%s' "$1" ;;
  esac
}

# Joins words into one shell command line, each quoted as needed.
join_quoted() {
  local word line=''
  for word in "$@"; do
    line+="${line:+ }$(quote "${word}")"
  done
  printf '%s' "${line}"
}

# Runs a command, or prints it under --dry-run.
run() {
  if (( DRY_RUN )); then
    join_quoted "$@"
    echo
  else
    "$@"
  fi
}

# Parses `[--dry-run] COMMAND [FLAGS] [-- TRAINER_FLAGS...]` into DRY_RUN,
# COMMAND and TRAINER_ARGS. The sourcing script declares its flags in two
# associative arrays: VALUE_FLAGS maps a flag that takes a value to the
# variable that receives it, SWITCH_FLAGS a flag without one to the variable
# set to 1. Exits after --help, and with usage when no command is given.
parse_args() {
  DRY_RUN=0
  COMMAND=''
  TRAINER_ARGS=()
  while (( $# )); do
    case "$1" in
      -h|--help) usage; exit 0 ;;
      --dry-run) DRY_RUN=1 ;;
      --)
        shift
        # shellcheck disable=SC2034  # read by the sourcing script
        TRAINER_ARGS=("$@")
        break ;;
      -*)
        # ${array[$1]+set} looks the flag up without evaluating it as code.
        if [[ -n "${VALUE_FLAGS[$1]+set}" ]]; then
          (( $# >= 2 )) || die "$1 needs a value."
          printf -v "${VALUE_FLAGS[$1]}" '%s' "$2"
          shift
        elif [[ -n "${SWITCH_FLAGS[$1]+set}" ]]; then
          printf -v "${SWITCH_FLAGS[$1]}" '%s' 1
        else
          die "unknown flag '$1'."
        fi ;;
      *)
        [[ -z "${COMMAND}" ]] || die "one command at a time, got '${COMMAND}' and '$1'."
        COMMAND="$1" ;;
    esac
    shift
  done
  if [[ -z "${COMMAND}" ]]; then
    usage >&2
    exit 2
  fi
}
