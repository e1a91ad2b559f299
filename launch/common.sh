#!/usr/bin/env bash
# Helpers shared by launch/gpu.sh and launch/tpu_vm.sh; sourced, not run.
# The sourcing script sets SCRIPT_NAME and DRY_RUN.

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
