"""Paths a user types: `~` and `$VARS` expanded wherever they are given.

The shell expands `--data_dir ~/tfds` but not `--data_dir=~/tfds` or
`--config.data_dir=~/tfds`, so every path the commands take goes through
`expand` once, at the boundary. URLs (gs://bucket/run) pass unchanged.
"""
import os


def expand(path):
  """`path` with `~` and environment variables expanded; None and '' stay."""
  if not path:
    return path
  path = os.fspath(path)
  if '://' in path:
    return path
  return os.path.expandvars(os.path.expanduser(path))
