"""The README's shell commands, run top to bottom as a newcomer runs them.

Every command in a ```bash block of README.md is either run, in the README's
order, in a scratch folder with HOME inside it, or named in SKIPPED with the
reason it cannot run here (a download, hours of training, a server). `pip
install` lines are checked against pyproject.toml instead of run. Only the
demo and the demo study are shortened, and evaluate limited to one image, by
overrides appended to the README's own command lines (SHORTENED).
"""
import os
import pathlib
import re
import shlex
import subprocess
import sys
import tomllib

import numpy as np
from PIL import Image
import pytest

ROOT = pathlib.Path(__file__).resolve().parent.parent
README = ROOT / 'README.md'

# A substring of a command -> why this test does not run it.
SKIPPED = {
    'python -m pytest': 'the test suite itself',
    'tensorboard --logdir': 'starts a server',
    '~/Rain100H': 'needs the Rain100H download',
    'configs/rain100h.py --workdir': 'trains the full model for hours',
    'configs/rain100h.py:paper': 'trains the full model for hours',
    'runs/rain100h': 'needs a trained benchmark run',
    'results/Rain100H': "needs another method's saved results",
    'latest_net': "needs the authors' released weights",
    '/tmp/dcsfn_official': "needs the authors' released weights, imported",
    'benchmarks/': 'benchmarks run for minutes to hours; their smoke tests '
                   'are in tests/test_model_benchmark_smoke.py',
    'python -m dcsfn_jax.aot': 'a TPU compile takes CPU minutes; '
                               'tests/test_aot*.py run aot',
    'launch/study.sh': 'needs GPUs, SLURM or TPU VMs; its dry runs are in '
                       'tests/test_study_configs.py',
}

# Overrides appended to a README command that starts with the key.
SHORTENED = {
    'python -m dcsfn_jax.train --config configs/demo.py': [
        '--config.total_steps=4', '--config.log_every_steps=2',
        '--config.eval_every_steps=4', '--config.checkpoint_every_steps=2',
        '--config.eval_max_images=2'],
    # One image: the self-ensemble runs the model 8 times on it, at the
    # demo's full test size (a photo of up to 512 px).
    'python -m dcsfn_jax.evaluate': ['--limit=1'],
    # Every variant once, for two steps: the demo study trains 9 runs of 300.
    'python -m dcsfn_jax.study --study configs/studies/demo.py': [
        '--study.seeds=1', '--config.total_steps=2',
        '--config.checkpoint_every_steps=2', '--config.eval_max_images=1'],
}


def readme_commands():
  """Every shell command of the README's bash blocks, in order; `a && b`
  gives two commands."""
  blocks = re.findall(r'```bash\n(.*?)```', README.read_text(), re.S)
  commands = []
  for block in blocks:
    joined = re.sub(r'\\\n\s*', ' ', block)
    for line in joined.splitlines():
      line = line.split(' #')[0].strip()
      if line and not line.startswith('#'):
        commands.extend(part.strip() for part in line.split('&&'))
  return commands


def _skip_reason(command):
  return next((why for key, why in SKIPPED.items() if key in command), None)


def _check_pip_install(command):
  """The extras a `pip install` line names exist in pyproject.toml."""
  extras = tomllib.loads((ROOT / 'pyproject.toml').read_text())['project'][
      'optional-dependencies']
  for name in re.findall(r"\.\[([\w,]+)\]", command):
    for extra in name.split(','):
      assert extra in extras, f'{command}: no extra {extra!r} in pyproject'


def _my_photos(folder):
  """Two small photos for the README's `my_photos/`."""
  from skimage import data  # pylint: disable=g-import-not-at-top
  folder.mkdir(parents=True)
  for name, photo in (('street.jpg', data.astronaut()),
                      ('cup.png', data.coffee())):
    image = Image.fromarray(np.asarray(photo)).resize((96, 64))
    image.save(folder / name)


def test_the_python_snippets_run():
  snippets = re.findall(r'```python\n(.*?)```', README.read_text(), re.S)
  assert snippets
  for snippet in snippets:
    result = subprocess.run([sys.executable, '-c', snippet], cwd=ROOT,
                            capture_output=True, text=True, timeout=600,
                            check=False)
    assert result.returncode == 0, (snippet, result.stderr[-3000:])


def test_every_command_is_run_or_skipped_for_a_stated_reason():
  commands = readme_commands()
  assert any('dcsfn_jax.train --config configs/demo.py' in c
             for c in commands)
  unused = [key for key in SKIPPED
            if not any(key in command for command in commands)]
  assert not unused, f'SKIPPED names commands the README no longer has: {unused}'


@pytest.mark.slow
def test_the_readme_runs_top_to_bottom(tmp_path):
  work = tmp_path / 'work'
  work.mkdir()
  for shared in ('configs',):
    (work / shared).symlink_to(ROOT / shared)
  _my_photos(work / 'my_photos')
  scratch = str(tmp_path / 'tmp') + '/'
  os.makedirs(scratch)
  env = dict(os.environ, HOME=str(tmp_path / 'home'))
  env.pop('TFDS_DATA_DIR', None)
  ran = []
  for command in readme_commands():
    if command.startswith('pip install'):
      _check_pip_install(command)
      continue
    if _skip_reason(command):
      continue
    args = shlex.split(command.replace('/tmp/', scratch))
    assert args[0] == 'python', command
    args[0] = sys.executable
    for prefix, extra in SHORTENED.items():
      if command.startswith(prefix):
        args += extra
    result = subprocess.run(args, cwd=work, env=env, capture_output=True,
                            text=True, timeout=900, check=False)
    assert result.returncode == 0, (command, result.stderr[-3000:])
    assert 'Traceback' not in result.stderr, (command, result.stderr[-3000:])
    ran.append(command)
  assert len(ran) >= 7, ran
