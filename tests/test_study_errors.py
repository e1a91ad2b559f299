"""Bad studies end in one clear `error:` line and lose nothing: misspelt
fields, twin variants, a workdir of another study, a dataset not
prepared."""
import os
import subprocess
import sys

import pytest

from dcsfn_jax import checkpointing
from dcsfn_jax import data
from dcsfn_jax.studies import runner
from dcsfn_jax.studies import runs
from dcsfn_jax.studies import spec
import tiny_study


def _study(tmp_path, **kwargs):
  return tiny_study.load(tiny_study.write_study(
      tmp_path, tmp_path / 'data', **kwargs))


def test_an_unknown_field_in_a_variant_gets_a_did_you_mean(tmp_path):
  with pytest.raises(spec.StudyError) as error:
    _study(tmp_path, variants=[
        {'name': 'full'},
        {'name': 'typo', 'overrides': {'model.cross_scal': False}}])
  message = str(error.value)
  assert "variant 'typo' overrides" in message
  assert 'did you mean --config.model.cross_scale?' in message


def test_two_variants_with_one_name_are_refused(tmp_path):
  with pytest.raises(spec.StudyError, match="two variants are named 'full'"):
    _study(tmp_path, variants=[
        {'name': 'full'},
        {'name': 'full', 'overrides': {'model.cross_scale': False}}])


def test_two_variants_with_one_config_are_refused(tmp_path):
  with pytest.raises(spec.StudyError,
                     match="variants 'full' and 'same' resolve to the same"):
    _study(tmp_path, variants=[
        {'name': 'full'},
        {'name': 'same', 'overrides': {'model.cross_scale': True}}])
  # A command-line override can make them equal too.
  path = tiny_study.write_study(tmp_path, tmp_path / 'data', name='other')
  with pytest.raises(spec.StudyError,
                     match="'full' and 'no_cross' resolve to the same"):
    tiny_study.load(path, ('--config.model.cross_scale=false',))


def test_the_seed_is_the_studys_own(tmp_path):
  path = tiny_study.write_study(tmp_path, tmp_path / 'data')
  with pytest.raises(spec.StudyError, match='--study.seeds'):
    tiny_study.load(path, ('--config.seed=3',))


def test_a_workdir_of_another_study_is_refused_naming_the_difference(
    tmp_path):
  workdir = checkpointing.as_path(tmp_path / 'study')
  workdir.mkdir()
  spec.adopt(_study(tmp_path), workdir)
  spec.adopt(_study(tmp_path), workdir)  # the same study: fine
  with pytest.raises(spec.StudyError,
                     match="holds study 'tiny', not 'other'"):
    spec.adopt(_study(tmp_path, name='other'), workdir)
  longer = tiny_study.load(tiny_study.write_study(tmp_path, tmp_path / 'data'),
                           ('--config.total_steps=8',))
  with pytest.raises(spec.StudyError) as error:
    spec.adopt(longer, workdir)
  assert ("its variant 'full' was trained with total_steps=4, this study "
          'asks for 8') in str(error.value)
  # Another data_dir (another host's copy) or more seeds is the same study.
  spec.adopt(_study(tmp_path, seeds=3, overrides={
      'data_dir': str(tmp_path / 'elsewhere')}), workdir)


def test_a_dataset_not_prepared_gives_trains_message(tmp_path):
  study = _study(tmp_path)
  with pytest.raises(data.DatasetNotPreparedError) as expected:
    data.load_split('synthetic_rain', 'train', str(tmp_path / 'data'))
  with pytest.raises(spec.StudyError) as error:
    runner.check_data(study, runs.all_runs(study))
  assert str(error.value) == str(expected.value)


def _study_command(*args, cwd=None):
  return subprocess.run(
      [sys.executable, '-m', 'dcsfn_jax.study', *args], capture_output=True,
      text=True, timeout=300, cwd=cwd, env={**os.environ})


def test_the_command_says_each_in_one_line(tmp_path):
  path = tiny_study.write_study(tmp_path, tmp_path / 'data')
  result = _study_command(f'--study={path}', f'--workdir={tmp_path / "w"}')
  with pytest.raises(data.DatasetNotPreparedError) as expected:
    data.load_split('synthetic_rain', 'train', str(tmp_path / 'data'))
  assert result.returncode == 1
  assert result.stderr.strip() == f'error: {expected.value}'
  assert not (tmp_path / 'w' / 'full').exists()  # nothing trained

  result = _study_command(f'--study={path}', f'--workdir={tmp_path / "w"}',
                          '--config.totl_steps=3')
  assert result.returncode == 1
  lines = result.stderr.strip().splitlines()
  assert len(lines) == 1 and lines[0].startswith('error: '), result.stderr
  assert 'did you mean --config.total_steps?' in lines[0]
