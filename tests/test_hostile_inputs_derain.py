"""`python -m dcsfn_jax.derain` against hostile inputs and flags.

A user's files are never touched: the output folder may not be, lie inside
or contain the input folder, no output is written over an input of the same
run, and --overwrite replaces only this project's earlier outputs. Colliding
names all get their own output, oversized photos are refused from their
header, and every refusal is one `error:` line that says what to do.
"""
import hashlib
import os
import struct
import subprocess
import sys
import time
import zlib

import numpy as np
import pytest
from PIL import Image

from dcsfn_jax import models
from dcsfn_jax.inference import derainer
from dcsfn_jax.images import files as image_files
import cli_checks
import tiny_models

# Its commands compile the same programs again and again: the first run's are
# reused (conftest.shared_compile_cache).
pytestmark = pytest.mark.usefixtures('shared_compile_cache')


def _derain(tmp_path, *args):
  return cli_checks.run(tmp_path, 'dcsfn_jax.derain', *args)


def _derain_measured(tmp_path, *args):
  """`_derain`, and the peak RSS (KiB) of that process alone: os.wait4
  reports the child's own usage, not that of every child this worker ran."""
  environment = dict(os.environ, HOME=os.fspath(tmp_path / 'home'),
                     TFDS_DATA_DIR=os.fspath(tmp_path / 'tfds'))
  logs = [tmp_path / 'derain.stdout', tmp_path / 'derain.stderr']
  with open(logs[0], 'w') as stdout, open(logs[1], 'w') as stderr:
    process = subprocess.Popen(  # pylint: disable=consider-using-with
        [sys.executable, '-m', 'dcsfn_jax.derain', *args], stdout=stdout,
        stderr=stderr, env=environment)
    _, status, usage = os.wait4(process.pid, 0)
  process.returncode = os.waitstatus_to_exitcode(status)
  output = [log.read_text() for log in logs]
  for log in logs:
    log.unlink()
  return (subprocess.CompletedProcess(process.args, process.returncode,
                                      *output), usage.ru_maxrss)


@pytest.fixture(scope='module')
def model_dir(tmp_path_factory):
  """A tiny save_pretrained checkpoint, shared by the whole module."""
  config = models.preset('official')
  config.update(channels=4, num_blocks=1, num_scales=1, convs_per_scale=1,
                single=True)
  return tiny_models.save_checkpoint(
      tmp_path_factory.mktemp('derain_model') / 'pretrained', config)


def _photo(seed, height=33, width=41):
  return np.random.default_rng(seed).integers(0, 256, (height, width, 3),
                                              dtype=np.uint8)


def _write_photos(folder, names):
  """Tiny distinct photos named `names` (format from the suffix)."""
  folder.mkdir(parents=True, exist_ok=True)
  for seed, name in enumerate(names):
    Image.fromarray(_photo(seed)).save(folder / name, quality=95)
  return folder


def _hostile_folder(tmp_path):
  """Colliding names, a non-image, a broken PNG, a hidden file and a
  subfolder."""
  folder = _write_photos(tmp_path / 'photos',
                         ['a.png', 'a.jpg', 'a_png.png', '.hidden.png'])
  Image.fromarray(_photo(9)[..., 0]).save(folder / 'gray.png')
  (folder / 'notes.txt').write_text('not a photo')
  (folder / 'broken.png').write_bytes(b'\x89PNG\r\n\x1a\n\x00\x00')
  _write_photos(folder / 'sub', ['inner.png'])
  return folder


def _md5s(folder):
  """{relative path: md5} of every file under folder, hidden ones too."""
  digests = {}
  for root, _, names in os.walk(folder):
    for name in names:
      path = os.path.join(root, name)
      with open(path, 'rb') as file:
        digests[os.path.relpath(path, folder)] = hashlib.md5(
            file.read()).hexdigest()
  return digests


@pytest.mark.parametrize('where', ['same', 'same_with_slash', 'inside',
                                   'contains', 'symlink'])
def test_output_that_is_inside_or_contains_the_input_folder_is_refused(
    model_dir, tmp_path, where):
  folder = _write_photos(tmp_path / 'photos', ['a.png', 'b.jpg'])
  output = {'same': folder, 'same_with_slash': f'{folder}{os.sep}',
            'inside': folder / 'derained', 'contains': tmp_path,
            'symlink': tmp_path / 'link'}[where]
  if where == 'symlink':
    os.symlink(folder, output)
  before = _md5s(folder)
  result = _derain(tmp_path, f'--workdir={model_dir}', f'--input={folder}',
                   f'--output={output}', '--overwrite', '--panels', '--niqe')
  assert result.returncode == 1
  line = cli_checks.error_line(result)
  assert f'--input folder {folder}' in line
  assert f'choose a folder outside it, e.g. {folder}_derained' in line
  assert _md5s(folder) == before
  assert not (folder / 'derained').exists()


def test_an_input_file_is_never_written_over_even_with_overwrite(
    model_dir, tmp_path):
  folder = _write_photos(tmp_path / 'photos', ['a.png', 'b.jpg'])
  before = _md5s(folder)
  result = _derain(tmp_path, f'--workdir={model_dir}',
                   f'--input={folder / "a.png"}', f'--output={folder}',
                   '--overwrite', '--panels', '--niqe')
  assert result.returncode == 1
  assert 'Derained 0 of 1 file(s).' in result.stdout
  assert (f'{folder / "a.png"} is an input of this run; it is never written '
          'over. Choose another --output.') in result.stdout
  assert 'a.png' in cli_checks.error_line(result)
  assert _md5s(folder) == before  # no panel, no niqe.csv either


def test_overwrite_replaces_earlier_outputs_only(model_dir, tmp_path):
  folder = _write_photos(tmp_path / 'photos', ['a.png', 'b.png'])
  image_files.write_png(folder / 'c.png', _photo(7))  # itself an earlier output
  output = tmp_path / 'out'
  output.mkdir()
  image_files.write_png(output / 'a.png', _photo(5))  # an earlier output
  Image.fromarray(_photo(6)).save(output / 'b.png')  # the user's own file
  os.link(folder / 'c.png', output / 'c.png')  # the input, by another name
  inputs, users = _md5s(folder), _md5s(output)
  result = _derain(tmp_path, f'--workdir={model_dir}', f'--input={folder}',
                   f'--output={output}', '--overwrite')
  assert result.returncode == 1
  assert 'Derained 1 of 3 file(s).' in result.stdout
  assert (f'{output / "b.png"} exists and was not written by dcsfn_jax; '
          '--overwrite replaces only earlier outputs.') in result.stdout
  assert f'{output / "c.png"} is an input of this run' in result.stdout
  line = cli_checks.error_line(result)
  assert '2 of 3 file(s) not derained (b.png, c.png)' in line
  assert _md5s(folder) == inputs
  after = _md5s(output)
  assert after['a.png'] != users['a.png'] and image_files.is_our_output(
      output / 'a.png')
  assert after['b.png'] == users['b.png'] and after['c.png'] == users['c.png']


@pytest.mark.parametrize('flags', [
    ['--panels', '--niqe'],
    ['--tile=16', '--tile_overlap=4', '--bucket'],
    ['--overwrite', '--panels', '--niqe', '--tile=24'],
    ['--bucket', '--max_pixels=1000'],
])
def test_any_flags_leave_the_input_folder_byte_identical(model_dir, tmp_path,
                                                         flags):
  folder = _hostile_folder(tmp_path)
  output = tmp_path / 'out'
  if '--overwrite' in flags:  # earlier outputs to replace
    inputs = derainer.list_inputs(folder)
    for path, name in zip(inputs, derainer.output_names(inputs)):
      if path.endswith(('broken.png', 'notes.txt')):
        continue
      os.makedirs(output / 'panels', exist_ok=True)
      image_files.write_png(output / name, _photo(8))
      image_files.write_png(output / 'panels' / name, _photo(8))
  before = _md5s(folder)
  result = _derain(tmp_path, f'--workdir={model_dir}', f'--input={folder}',
                   f'--output={output}', *flags)
  assert result.returncode == 1  # notes.txt and broken.png are skipped
  line = cli_checks.error_line(result)
  assert _md5s(folder) == before
  if '--max_pixels=1000' in flags:
    assert 'Derained 0 of 6 file(s).' in result.stdout
    assert '6 of 6 file(s) not derained (a.jpg, a.png, a_png.png and 3 ' in line
  else:
    assert '2 of 6 file(s) not derained (broken.png, notes.txt)' in line
    assert 'Derained 4 of 6 file(s).' in result.stdout
    assert len([n for n in os.listdir(output) if n.endswith('.png')]) == 4


def test_colliding_names_each_get_their_own_output(model_dir, tmp_path):
  folder = _write_photos(tmp_path / 'photos', ['x.png', 'x.jpg', 'x_png.png'])
  output = tmp_path / 'out'
  for flags in ([], ['--overwrite']):
    result = _derain(tmp_path, f'--workdir={model_dir}', f'--input={folder}',
                     f'--output={output}', *flags)
    assert result.returncode == 0, result.stderr[-3000:]
    assert 'Derained 3 of 3 file(s).' in result.stdout
    cli_checks.assert_quiet(result)
    written = _md5s(output)
    assert sorted(written) == ['x_jpg.png', 'x_png.png', 'x_png_2.png']
    assert len(set(written.values())) == 3  # three different photos


@pytest.mark.parametrize('names', [
    ['x.png', 'x.jpg', 'x_png.png'],
    ['A.png', 'a.png', 'a.PNG', 'A_png.png'],
    ['x.png', 'x.jpg', 'x_png.png', 'x_png_2.png', 'x_png_3.jpg'],
    ['a.b.png', 'a.b.jpg', 'a_b.png', 'a_b_png.png', 'a.b.c'],
    ['_.png', '__.jpg', 'photo.png', '_photo.jpg', 'photo.tif'],
    ['IMG_1.JPG', 'img_1.jpeg', 'IMG_1.png', 'img_1_png.png', 'IMG_1'],
])
def test_output_names_are_distinct_ignoring_case(names):
  outputs = derainer.output_names([os.path.join('photos', n) for n in names])
  assert len(outputs) == len(names)
  assert len({n.lower() for n in outputs}) == len(names), outputs
  assert all(n.endswith('.png') and '/' not in n for n in outputs)
  # A name nobody else claims is kept as it is.
  assert derainer.output_names(['p/IMG_1.jpg', 'p/b.png']) == ['IMG_1.png',
                                                                'b.png']


def _write_huge_bilevel_png(path, side):
  """A valid 1-bit side x side PNG of ~side**2 / 8 zero bytes, compressed
  to a few hundred KB without ever holding the image in memory."""
  row = b'\x00' * (1 + -(-side // 8))  # filter byte + packed pixels
  compressor = zlib.compressobj(9)
  data = b''.join(compressor.compress(row * 1000)
                  for _ in range(side // 1000))
  data += compressor.compress(row * (side % 1000)) + compressor.flush()

  def chunk(kind, payload):
    return (struct.pack('>I', len(payload)) + kind + payload
            + struct.pack('>I', zlib.crc32(kind + payload) & 0xffffffff))

  path.write_bytes(b'\x89PNG\r\n\x1a\n'
                   + chunk(b'IHDR', struct.pack('>IIBBBBB', side, side, 1, 0,
                                                0, 0, 0))
                   + chunk(b'IDAT', data) + chunk(b'IEND', b''))


def test_a_huge_photo_is_refused_from_its_header(model_dir, tmp_path,
                                                 monkeypatch):
  monkeypatch.setattr(Image, 'MAX_IMAGE_PIXELS', None)  # to check the header
  folder = _write_photos(tmp_path / 'photos', ['small.png'])
  _write_huge_bilevel_png(folder / 'huge.png', 30000)
  assert (folder / 'huge.png').stat().st_size < 1_000_000
  with Image.open(folder / 'huge.png') as huge:
    assert huge.size == (30000, 30000) and huge.mode == '1'
  before = _md5s(folder)
  # The same command on the small photo alone: the peak a run needs without
  # the huge file (the model, XLA, the small photo), on this machine.
  alone = _write_photos(tmp_path / 'alone', ['small.png'])
  _, baseline_peak = _derain_measured(tmp_path, f'--workdir={model_dir}',
                                      f'--input={alone}',
                                      f'--output={tmp_path / "alone_out"}')
  start = time.time()
  result, peak = _derain_measured(tmp_path, f'--workdir={model_dir}',
                                  f'--input={folder}',
                                  f'--output={tmp_path / "out"}')
  seconds = time.time() - start
  assert result.returncode == 1
  assert 'Derained 1 of 2 file(s).' in result.stdout
  assert (f'{folder / "huge.png"}: 30000x30000 is 900.0 megapixels, above '
          f'--max_pixels={derainer.DEFAULT_MAX_PIXELS}; raise --max_pixels '
          '(with --tile to bound memory) to derain it.') in result.stdout
  assert 'huge.png' in cli_checks.error_line(result)
  assert os.listdir(tmp_path / 'out') == ['small.png']
  assert _md5s(folder) == before
  # Never decoded: decoding alone would add 900 MB (2.7 GB as RGB) to the
  # run's peak; reading its header adds nothing measurable. Peaks in KiB, of
  # each derain process alone.
  assert seconds < 60
  assert peak <= baseline_peak + 300_000, (peak, baseline_peak)


@pytest.mark.parametrize('where', ['file', 'under_a_file'])
def test_an_unusable_output_is_refused_before_the_model_loads(
    model_dir, tmp_path, where):
  folder = _write_photos(tmp_path / 'photos', ['a.png'])
  (tmp_path / 'notes.txt').write_text('a file')
  output = {'file': tmp_path / 'notes.txt',
            'under_a_file': tmp_path / 'notes.txt' / 'sub'}[where]
  before = _md5s(tmp_path)
  # INFO logging on, so a model load would show as orbax's restore line.
  result = _derain(tmp_path, f'--workdir={model_dir}', f'--input={folder}',
                   f'--output={output}', '--verbosity=0')
  assert result.returncode == 1
  line = cli_checks.error_line(result)
  assert {'file': f'error: --output {output} is a file; choose a folder for '
                  'the derained PNGs.',
          'under_a_file': f'error: --output {output} cannot be created: '
                          f'{tmp_path / "notes.txt"} is not a writable '
                          'folder.'}[where] == line
  assert 'Restoring checkpoint' not in result.stderr
  assert _md5s(tmp_path) == before


def test_help_exits_zero(tmp_path):
  result = _derain(tmp_path, '--help')
  assert result.returncode == 0
  assert '--max_pixels' in result.stdout and '--overwrite' in result.stdout


class _Identity:
  """Stands in for a Derainer: returns the photo as float."""
  granule = 4

  def __call__(self, photo):
    return photo.astype(np.float32) / 255.0


def test_inputs_with_names_at_the_file_system_limit_are_derained(tmp_path):
  # 255 bytes, the longest name a file system takes: with '.png' added, or
  # its suffix kept to tell two apart, the output name would not fit.
  folder = _write_photos(tmp_path / 'photos', ['a' * 251 + '.png',
                                               'a' * 251 + '.jpg'])
  Image.fromarray(_photo(9)).save(folder / ('b' * 255), format='PNG')
  inputs = derainer.list_inputs(folder)
  results = derainer.derain_files(_Identity(), inputs, tmp_path / 'out',
                                  progress=False)
  assert [r.error for r in results] == ['', '', '']
  written = sorted(os.listdir(tmp_path / 'out'))
  assert len(set(written)) == 3
  assert all(len(name.encode()) <= 255 and name.endswith('.png')
             for name in written), written
  for result in results:
    assert os.path.dirname(result.output) == os.fspath(tmp_path / 'out')
    assert image_files.is_our_output(result.output)


def test_the_summary_says_where_the_outputs_went(tmp_path):
  results = [derainer.Result(path='a.jpg', output=f'{tmp_path}/a.png'),
             derainer.Result(path='b.jpg', error='b.jpg: not an image.')]
  lines = derainer.summarise(results, False, tmp_path / 'out')
  assert lines[0] == 'Derained 1 of 2 file(s).'
  assert f'outputs in {tmp_path / "out"}' in lines[1]


def test_weights_holding_inf_are_refused_naming_the_parameter(tmp_path):
  config = models.preset('official')
  config.update(channels=4, num_blocks=1, num_scales=1, convs_per_scale=1,
                single=True)
  name = tiny_models.save_broken_checkpoint(tmp_path / 'broken', config,
                                            np.inf)
  folder = _write_photos(tmp_path / 'photos', ['a.png'])
  result = _derain(tmp_path, f'--workdir={tmp_path / "broken"}',
                   f'--input={folder}', f'--output={tmp_path / "out"}')
  assert result.returncode == 1
  line = cli_checks.error_line(result)
  assert f'parameter {name} holds inf/NaN values (1 of ' in line, line
  assert not (tmp_path / 'out').exists()
