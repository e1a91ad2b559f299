"""The study configs of configs/studies/ and launch/study.sh: every paper
table resolves without data, the demo is at least 3 variants x 3 seeds,
SLURM's array variables choose the share, the launch script passes
shellcheck and its dry runs print the commands it would run."""
import os
import pathlib
import subprocess
import sys

import pytest

from dcsfn_jax.studies import runs
import tiny_study

ROOT = pathlib.Path(__file__).resolve().parents[1]
STUDIES = sorted((ROOT / 'configs' / 'studies').glob('*.py'))
LAUNCH = ROOT / 'launch' / 'study.sh'
# Study -> (its paper table's published rows, the reference variant).
PAPER_TABLES = {
    'table1': ('paper/table1/', ''),
    'table3': ('paper/table3/', 'M4_full'),
    'table4': ('paper/table4/', 'with_inner'),
    'table5': ('paper/table5/', 'K=3'),
    'table6': ('paper/table6/', 'GRU'),
    'recurrent_rain200h': ('derain_toolbox/', 'GRU'),
}


def test_there_is_one_study_per_paper_table_and_the_demo():
  assert sorted(path.stem for path in STUDIES) == sorted(
      [*PAPER_TABLES, 'demo'])


@pytest.mark.parametrize('path', [p for p in STUDIES if p.stem != 'demo'],
                         ids=lambda p: p.stem)
def test_each_paper_study_resolves_against_its_table(path):
  study = tiny_study.load(path)
  prefix, reference = PAPER_TABLES[path.stem]
  assert study.reference == reference
  assert len(study.seeds) == 3
  for variant in study.variants:
    assert variant.published and all(
        row.startswith(prefix) for row in variant.published), variant.name
    # The paper's tables use the text's network on Rain100H; the toolbox's
    # the released one on Rain200H.
    if path.stem == 'recurrent_rain200h':
      assert (variant.config.dataset, variant.config.model.channels) == (
          'rain200h', 20)
    else:
      assert variant.config.model.channels == 32
  published = {row for variant in study.variants
               for row in variant.published}
  assert len(published) == len(study.variants)


def test_the_demo_study_is_three_variants_by_three_seeds_of_the_demo():
  study = tiny_study.load(ROOT / 'configs' / 'studies' / 'demo.py')
  assert len(study.variants) >= 3 and len(study.seeds) >= 3
  assert {v.config.dataset for v in study.variants} == {'synthetic_rain'}
  assert all(v.config.prepare_data for v in study.variants)


def test_list_takes_its_share_from_slurms_array_variables(tmp_path):
  env = {**os.environ, 'SLURM_ARRAY_TASK_ID': '1',
         'SLURM_ARRAY_TASK_COUNT': '4'}
  result = subprocess.run(
      [sys.executable, '-m', 'dcsfn_jax.study',
       '--study=configs/studies/table5.py', f'--workdir={tmp_path / "t5"}',
       '--list'], capture_output=True, text=True, timeout=300, env=env,
      cwd=ROOT)
  assert result.returncode == 0, result.stderr
  lines = [line for line in result.stdout.splitlines()
           if line.startswith('  ') and '/seed_' in line
           and not line.startswith('    ')]
  assert len(lines) == 12
  mine = [line.split()[0] for line in lines if '[another task]' not in line]
  assert mine == ['K=2/seed_0', 'K=2/seed_1', 'K=2/seed_2']
  assert all('pending' in line for line in lines)
  assert not (tmp_path / 't5').exists()  # --list writes nothing


def _shellcheck():
  beside_python = pathlib.Path(sys.executable).parent / 'shellcheck'
  return str(beside_python) if beside_python.exists() else 'shellcheck'


def test_the_launch_script_passes_shellcheck():
  result = subprocess.run([_shellcheck(), '-x', '--severity=style',
                           str(LAUNCH)], capture_output=True, text=True)
  assert result.returncode == 0, result.stdout + result.stderr


def _dry_run(*args):
  result = subprocess.run([str(LAUNCH), '--dry-run', *args],
                          capture_output=True, text=True, cwd=ROOT,
                          timeout=60)
  assert result.returncode == 0, result.stderr
  return result.stdout.splitlines()


def test_the_slurm_array_dry_run_submits_one_task_per_share():
  (line,) = _dry_run('slurm', '--study', 'configs/studies/table5.py',
                     '--tasks', '12', '--partition', 'gpu', '--time',
                     '48:00:00', '--workdir', '/shared/t5', '--data_dir',
                     '/shared/tfds', '--', '--config.total_steps=2000')
  assert line == (
      'sbatch --job-name=dcsfn-study --array=0-11 --ntasks=1 '
      '--gpus-per-task=1 --output=/shared/t5/logs/slurm_%A_%a.out '
      "--partition=gpu --time=48:00:00 '--wrap=python3 -m dcsfn_jax.study "
      '--study=configs/studies/table5.py --workdir=/shared/t5 '
      "--config.data_dir=/shared/tfds --config.total_steps=2000'")


def test_the_gpu_dry_run_starts_one_share_per_gpu():
  lines = _dry_run('gpus', '--gpus', '2', '--study',
                   'configs/studies/table5.py', '--workdir', 'runs/t5')
  assert lines == [
      'env CUDA_VISIBLE_DEVICES=0 python3 -m dcsfn_jax.study '
      '--study=configs/studies/table5.py --workdir=runs/t5 --task_index=0 '
      '--num_tasks=2',
      'env CUDA_VISIBLE_DEVICES=1 python3 -m dcsfn_jax.study '
      '--study=configs/studies/table5.py --workdir=runs/t5 --task_index=1 '
      '--num_tasks=2',
      'python3 -m dcsfn_jax.study --study=configs/studies/table5.py '
      '--workdir=runs/t5 --report_only']


def test_the_tpu_vm_dry_run_runs_one_share_on_the_vm():
  (line,) = _dry_run('tpu-vm', '--name', 'vm1', '--task_index', '1',
                     '--num_tasks', '2', '--study',
                     'configs/studies/table5.py', '--workdir', 'gs://b/t5',
                     '--data_dir', 'gs://b/tfds')
  assert line.startswith('gcloud compute tpus tpu-vm ssh vm1 '
                         '--zone=us-central2-b --worker=0 ')
  assert ('gcloud storage rsync --recursive gs://b/tfds '
          '$HOME/tensorflow_datasets') in line
  assert ('--workdir=gs://b/t5 --task_index=1 --num_tasks=2 '
          '--config.data_dir=$HOME/tensorflow_datasets') in line
  assert runs.share(list(range(12)), 1, 2) == [1, 3, 5, 7, 9, 11]
