"""With libtpu installed (the test extra), a command on a host without TPU
chips never loads it: no lockfile, no scan of other processes, no start-up
time (`parallel.skip_absent_tpu`, called by every command's flag parser)."""
import os
import subprocess
import sys

_PROBE = ('from dcsfn_jax import parallel\n'
          'parallel.skip_absent_tpu()\n'
          'import jax\n'
          'jax.devices()\n'
          "print('libtpu' in open('/proc/self/maps').read())\n")


def test_a_cpu_command_does_not_load_libtpu():
  env = {k: v for k, v in os.environ.items() if k != 'JAX_PLATFORMS'}
  completed = subprocess.run([sys.executable, '-c', _PROBE], env=env,
                             capture_output=True, text=True, timeout=300)
  assert completed.returncode == 0, completed.stderr[-2000:]
  assert completed.stdout.strip() == 'False', 'libtpu was loaded'
  assert 'tpu' not in completed.stderr.lower(), completed.stderr
