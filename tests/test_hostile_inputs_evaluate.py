"""`python -m dcsfn_jax.evaluate` against bad flags: one `error:` line that
says what to do, and no output folder (empty or not) left behind."""
import hashlib
import os
import pathlib

import pytest

from dcsfn_jax.evaluation import evaluator
import cli_checks

# Its commands compile the same programs again and again: the first run's are
# reused (conftest.shared_compile_cache).
pytestmark = pytest.mark.usefixtures('shared_compile_cache')


def _evaluate(tmp_path, *args):
  return cli_checks.run(tmp_path, 'dcsfn_jax.evaluate', *args)


def _default_output(checkpoint_dir):
  return checkpoint_dir.parent / f'{checkpoint_dir.name}_eval'


@pytest.mark.parametrize('limit, output', [('-1', True), ('0', False)])
def test_a_limit_below_one_is_one_line_and_creates_nothing(
    checkpoint_dir, tmp_path, limit, output):
  output = [f'--output={tmp_path / "report"}'] if output else []
  result = _evaluate(tmp_path, f'--workdir={checkpoint_dir}',
                     f'--limit={limit}', *output)
  assert result.returncode == 1
  assert cli_checks.error_line(result) == (
      f'error: --limit={limit} must be a positive number of images (leave '
      'it out to evaluate them all).')
  assert not (tmp_path / 'report').exists()
  assert not _default_output(checkpoint_dir).exists()


@pytest.mark.parametrize('flags, message', [
    (['--split=nosuch', '--output={tmp}/reports/run/one'],
     "synthetic_rain has no split 'nosuch'; it has "),
    (['--dataset=rain100h', '--data_dir={tmp}/empty_data'],
     'rain100h is not prepared in '),
    (['--protocol=psnr', '--output={tmp}/reports/run/one'],
     "'official', 'y_uint8'"),
])
def test_a_failed_run_leaves_no_output_folders(checkpoint_dir, tmp_path,
                                               flags, message):
  result = _evaluate(tmp_path, f'--workdir={checkpoint_dir}',
                     *[flag.format(tmp=tmp_path) for flag in flags])
  assert result.returncode == 1
  assert message in cli_checks.error_line(result)
  assert not (tmp_path / 'reports').exists()
  assert not (tmp_path / 'empty_data').exists()
  assert not _default_output(checkpoint_dir).exists()


@pytest.mark.parametrize('where', ['file', 'under_a_file'])
def test_an_unusable_output_is_refused_before_the_checkpoint_loads(
    tmp_path, where):
  (tmp_path / 'notes.txt').write_text('a file')
  output = {'file': tmp_path / 'notes.txt',
            'under_a_file': tmp_path / 'notes.txt' / 'sub'}[where]
  # A missing checkpoint would be the error if it were loaded first.
  result = _evaluate(tmp_path, f'--workdir={tmp_path / "no_checkpoint"}',
                     f'--output={output}')
  assert result.returncode == 1
  assert cli_checks.error_line(result) == {
      'file': f'error: --output {output} is a file; choose a folder.',
      'under_a_file': f'error: --output {output} cannot be created: '
                      f'{tmp_path / "notes.txt"} is a file, not a folder.',
  }[where]
  assert (tmp_path / 'notes.txt').read_text() == 'a file'


def test_a_failure_mid_evaluation_removes_every_folder_it_created(
    checkpoint_dir, tmp_path, monkeypatch):
  def broken(*args, **kwargs):
    raise RuntimeError('disk on fire')

  monkeypatch.setattr(evaluator, 'evaluate_examples', broken)
  for output in (tmp_path / 'reports' / 'run' / 'one', None):
    with pytest.raises(RuntimeError, match='disk on fire'):
      evaluator.evaluate_checkpoint(checkpoint_dir, output_dir=output,
                                    progress=False)
  assert not (tmp_path / 'reports').exists()
  assert not _default_output(checkpoint_dir).exists()
  # A folder that was there before stays, even when empty.
  (tmp_path / 'kept').mkdir()
  with pytest.raises(RuntimeError):
    evaluator.evaluate_checkpoint(checkpoint_dir, output_dir=tmp_path / 'kept',
                                  progress=False)
  assert (tmp_path / 'kept').is_dir()


def test_a_healthy_run_prints_no_warnings(checkpoint_dir, tmp_path):
  result = _evaluate(tmp_path, f'--workdir={checkpoint_dir}', '--limit=1',
                          f'--output={tmp_path / "report"}', '--nopanels')
  assert result.returncode == 0, result.stderr[-3000:]
  assert '| official |' in result.stdout
  cli_checks.assert_quiet(result)


def test_help_exits_zero(tmp_path):
  result = _evaluate(tmp_path, '--help')
  assert result.returncode == 0
  assert '--limit' in result.stdout


def _hashes(*folders):
  return {os.fspath(path): hashlib.md5(path.read_bytes()).hexdigest()
          for folder in folders for path in sorted(pathlib.Path(folder).rglob(
              '*')) if path.is_file()}


@pytest.mark.parametrize('flags', [
    {}, {'bucket': True, 'panels': False}, {'self_ensemble': True,
                                            'limit': 1},
    {'protocols': ['y_float'], 'overwrite': True, 'weights': 'raw'}])
def test_evaluate_never_touches_the_checkpoint_or_the_data(
    checkpoint_dir, synthetic_data_dir, tmp_path, flags):
  before = _hashes(checkpoint_dir, synthetic_data_dir)
  output = tmp_path / 'report'
  evaluator.evaluate_checkpoint(checkpoint_dir, output_dir=output,
                                progress=False, **flags)
  if flags.get('overwrite'):  # and again, into the same folder
    evaluator.evaluate_checkpoint(checkpoint_dir, output_dir=output,
                                  progress=False, **flags)
  assert _hashes(checkpoint_dir, synthetic_data_dir) == before


def test_overwrite_replaces_only_files_an_earlier_run_wrote(
    checkpoint_dir, tmp_path):
  output = tmp_path / 'report'
  evaluator.evaluate_checkpoint(checkpoint_dir, output_dir=output, limit=1,
                                progress=False)
  (output / 'derained' / 'mine.png').write_bytes(b'not ours')
  before = _hashes(output)
  with pytest.raises(FileExistsError,
                     match=r'mine.png exists and was not written by '
                           'dcsfn_jax; --overwrite replaces only earlier'):
    evaluator.evaluate_checkpoint(checkpoint_dir, output_dir=output,
                                  limit=1, overwrite=True, progress=False)
  assert _hashes(output) == before
  (output / 'derained' / 'mine.png').unlink()
  (output / 'summary.json').write_text('{"my": "notes"}\n')
  with pytest.raises(FileExistsError, match='summary.json exists and was '
                                            'not written by dcsfn_jax'):
    evaluator.evaluate_checkpoint(checkpoint_dir, output_dir=output,
                                  limit=1, overwrite=True, progress=False)
  assert (output / 'summary.json').read_text() == '{"my": "notes"}\n'


def test_the_command_ends_with_every_images_figures(checkpoint_dir,
                                                   tmp_path):
  result = _evaluate(tmp_path, f'--workdir={checkpoint_dir}', '--limit=2',
                     f'--output={tmp_path / "report"}', '--nopanels',
                     '--protocol=official,y_uint8')
  assert result.returncode == 0, result.stderr[-3000:]
  table = result.stdout[result.stdout.index('Per image (2):'):]
  assert ('| image | official PSNR / SSIM | y_uint8 PSNR / SSIM | rainy '
          'input (official) |') in table
  rows = [line for line in table.splitlines()[3:] if line.startswith('| ')]
  assert len(rows) == 3 and all(line.count('/') == 3 for line in rows[1:])


def test_weights_holding_nan_are_refused_naming_the_parameter(tmp_path):
  from dcsfn_jax import models  # pylint: disable=g-import-not-at-top
  import tiny_models  # pylint: disable=g-import-not-at-top
  config = models.preset('official')
  config.update(channels=4, num_blocks=1, num_scales=1, convs_per_scale=1,
                single=True)
  name = tiny_models.save_broken_checkpoint(
      tmp_path / 'broken', config, float('nan'), dataset='rain100h')
  with pytest.raises(ValueError, match=f'parameter {name} holds inf/NaN'):
    evaluator.evaluate_checkpoint(tmp_path / 'broken',
                                  output_dir=tmp_path / 'report',
                                  progress=False)
  assert not (tmp_path / 'report').exists()
