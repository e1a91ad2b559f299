"""Running a command as a user would, and what its output must look like."""
import os
import subprocess
import sys


def run(tmp_path, module, *args, env=None):
  """`python -m MODULE ARGS` with HOME and TFDS_DATA_DIR inside tmp_path."""
  environment = dict(os.environ, HOME=os.fspath(tmp_path / 'home'),
                     TFDS_DATA_DIR=os.fspath(tmp_path / 'tfds'), **(env or {}))
  return subprocess.run([sys.executable, '-m', module, *args],
                        capture_output=True, text=True, timeout=300,
                        check=False, env=environment)


def error_line(result):
  """The one `error:` line on stderr; asserts there is exactly one and no
  traceback."""
  start = max(0, result.stderr.find('Traceback') - 500)
  assert 'Traceback' not in result.stderr, result.stderr[start:start + 4000]
  lines = [line for line in result.stderr.splitlines()
           if line.startswith('error:')]
  assert len(lines) == 1, result.stderr[-3000:]
  return lines[0]


def assert_quiet(result):
  """No warnings, no absl/orbax log lines, at most 2 lines on stderr (the
  caller checks the exit code)."""
  lines = [line for line in result.stderr.split('\n') if line.strip()]
  assert len(lines) < 3, result.stderr[-3000:]
  assert 'WARNING' not in result.stderr and not any(
      line[:1] in 'WEFI' and line[1:5].isdigit() for line in lines), lines
